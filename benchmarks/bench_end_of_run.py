"""How much of a short training command is spent after its last epoch (the end of a run:
calibration, the validation report, the input check's fit, pictures).

    python benchmarks/bench_end_of_run.py [--config seed] [--epochs 1] [--out runs/bench-end]

Runs `pneumo train --config CONFIG --set epochs=N` as a user would, timestamps its output lines,
and prints the whole command's seconds, the seconds after the last epoch's line, and their share.
Run with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import DATA, machine, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="seed")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default="runs/bench-end")
    args = parser.parse_args()
    command = [
        sys.executable,
        "-m",
        "pneumo",
        "train",
        "--config",
        args.config,
        "--set",
        f"epochs={args.epochs}",
        "--set",
        f"data={DATA}",
        "--out",
        args.out,
        "--overwrite",
        "--quiet",
    ]
    start = time.perf_counter()
    last_epoch = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout or []:
            if line.startswith("epoch "):
                last_epoch = time.perf_counter() - start
    total = time.perf_counter() - start
    if proc.returncode != 0 or last_epoch is None:
        raise SystemExit(f"the training command failed (exit {proc.returncode})")
    after = total - last_epoch
    print(
        table(
            f"`pneumo train --config {args.config} --set epochs={args.epochs}`, whole command",
            ["seconds in all", "until the last epoch's line", "after it", "share after"],
            [[f"{total:.1f}", f"{last_epoch:.1f}", f"{after:.1f}", f"{after / total:.0%}"]],
            ran_on=machine(),
        )
    )


if __name__ == "__main__":
    main()
