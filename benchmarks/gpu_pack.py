"""Pack a GPU session's runs into what the device tool can bring back (files under 16 MB, 64 MB in all).

    python benchmarks/gpu_pack.py runs/gpu OUT [--keep 2]

Writes OUT/reports.tar.gz (every run's reports, plots, configs and splits, no weights) and, for
each arm (run folders named ARM-sSEED), the `--keep` members with the best mean accuracy at
62.5% pneumonia over the 14 shifted copies of validation (the development signal; validation
only) as OUT/member-ARM-sSEED.tar (weights, metadata and input check). The rest of the members' weights stay
behind; their reports come back.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from collections import defaultdict
from pathlib import Path

from signal_table import mean_shifted_accuracy


def signal(run: Path) -> float:
    """Mean accuracy at 62.5% pneumonia over the shifted copies of validation, from the run's report."""
    return mean_shifted_accuracy(json.loads((run / "val_report.json").read_text()).get("shifted", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--keep", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.out / "reports.tar.gz", "w:gz") as tar:
        for path in sorted(args.runs.rglob("*")):
            if path.is_file() and path.suffix != ".safetensors" and "checkpoints" not in path.parts:
                tar.add(path, arcname=str(path))
    arms: dict[str, list[tuple[float, Path]]] = defaultdict(list)
    for run in sorted(args.runs.glob("*-s*")):
        if (run / "val_report.json").exists() and (run / "model" / "weights.safetensors").exists():
            arms[run.name.rsplit("-s", 1)[0]].append((signal(run), run))
    for arm, runs in arms.items():
        for score, run in sorted(runs, key=lambda r: -r[0])[: args.keep]:
            print(f"bringing back {run.name}: mean accuracy at 62.5% over the shifts {score:.4f}")
            with tarfile.open(args.out / f"member-{run.name}.tar", "w") as tar:
                for name in ("weights.safetensors", "meta.json", "features.safetensors"):
                    if (run / "model" / name).exists():
                        tar.add(run / "model" / name, arcname=str(run / "model" / name))


if __name__ == "__main__":
    main()
