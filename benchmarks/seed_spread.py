"""Train one recipe with several seeds and tabulate validation and shifted-proxy metrics with their spread.

    python benchmarks/seed_spread.py --config cpu --seeds 0 1 2 --out runs/spread [--set KEY=VALUE ...]

Each run folder is kept (OUT/<config>-s<seed>); rerunning reuses finished runs, so runs made
on another machine (a lent GPU) can be tabulated here; the table names the machine each run recorded.
The columns are the development signal (README, "The development signal"): validation, the
validation images under acquisition and framing shifts, calibration error under the shifts, and
the share of Grad-CAM evidence in the image's outer frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import DATA, shifted_report, table

from pneumo.config import load_config
from pneumo.evaluation.robustness import ACQUISITION_SHIFTS, FRAMING_SHIFTS
from pneumo.training.loop import train


def summarise(report: dict) -> dict[str, float]:
    """One run's line of the development signal: validation, then the same images under the
    acquisition and the framing shifts, calibration, and where the model looks (Grad-CAM)."""
    acquisition = [v for k, v in report["shifted"].items() if k in ACQUISITION_SHIFTS]
    framing = [v for k, v in report["shifted"].items() if k in FRAMING_SHIFTS]
    nan = float("nan")
    calibration = report.get("calibration", {})
    return {
        "epoch": report["epoch"],
        "threshold": report["threshold"],
        "val accuracy": report["accuracy"],
        "val ROC AUC": report["roc_auc"],
        "val recall": report["recall"],
        "val specificity": report["specificity"],
        "acquisition ROC AUC (mean)": float(np.mean([s["roc_auc"] for s in acquisition])),
        "framing ROC AUC (mean)": float(np.mean([s["roc_auc"] for s in framing])) if framing else nan,
        "shifted recall (min)": float(np.min([s["recall"] for s in acquisition + framing])),
        "shifted specificity (min)": float(np.min([s["specificity"] for s in acquisition + framing])),
        "accuracy at 62.5% (shifted mean)": float(np.mean([s["accuracy_at_prevalence"] for s in acquisition + framing])),
        "T": calibration.get("temperature", nan),
        "ECE shifted": calibration.get("ece_shifted_after", nan),
        "CAM frame share": report.get("cam_frame_share", nan),
        "minutes": report.get("seconds_total", nan) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/spread")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    rows, machines = {}, set()
    for seed in args.seeds:
        run = Path(args.out) / f"{Path(args.config).stem}-s{seed}"
        if not (run / "val_report.json").exists():
            cfg = load_config(args.config, [f"data={DATA}", *args.overrides, f"seed={seed}"])
            train(cfg, out=run, overwrite=True, progress=False, log=print)
        report = json.loads((run / "val_report.json").read_text())
        report["shifted"] = shifted_report(run, report)
        rows[seed] = summarise(report)
        machines.add(report.get("machine", "unknown machine"))
    columns = list(next(iter(rows.values())))
    body = [(seed, *(round(v, 4) for v in r.values())) for seed, r in rows.items()]
    values = np.array([list(r.values()) for r in rows.values()], dtype=float)
    body.append(("mean ± sd", *(f"{m:.4f} ± {s:.4f}" for m, s in zip(values.mean(0), values.std(0, ddof=1 if len(values) > 1 else 0)))))
    overrides = " ".join(args.overrides)
    ran_on = "trained on " + "; ".join(sorted(machines))  # runs may be reused from another machine
    print(table(f"{args.config} {overrides} over seeds {args.seeds}", ["seed", *columns], body, ran_on=ran_on))


if __name__ == "__main__":
    main()
