"""The development signal of finished runs (or model folders written by `pneumo ensemble`), side by side.

    python benchmarks/signal_table.py runs/bundled-recal runs/frame224-s1 runs/ens --names bundled frame ensemble [--shifts]
    python benchmarks/signal_table.py runs/gpu/none-s{1,2,3} runs/gpu/content-s{1,2,3} --groups none content

Reads each folder's val_report.json: validation, the same images under the acquisition and
framing shifts (README, "The development signal"), calibration under the shifts, and the share
of Grad-CAM evidence in the outer frame. With --shifts, also one line per shift and model
(ROC AUC, sensitivity, specificity at the model's threshold). With --groups, also each column's
mean ± sd over the models whose names start with each group's name (seeds of one recipe).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import shifted_report, table

from pneumo.evaluation.robustness import ACQUISITION_SHIFTS, FRAMING_SHIFTS


def mean_shifted_accuracy(shifted: dict) -> float:
    """Accuracy at 62.5% pneumonia, averaged over the shifted copies of validation (not the unshifted images)."""
    return float(
        np.mean([s["accuracy_at_prevalence"] for name, s in shifted.items() if name in ACQUISITION_SHIFTS or name in FRAMING_SHIFTS])
    )


def summary(report: dict) -> list:
    shifted = report["shifted"]
    acquisition = [shifted[k] for k in ACQUISITION_SHIFTS if k in shifted]
    framing = [shifted[k] for k in FRAMING_SHIFTS if k in shifted]
    calibration = report.get("calibration", {})
    nan = float("nan")
    values = [
        (report["threshold"], 2),
        (calibration.get("temperature", nan), 2),
        (report["roc_auc"], 4),
        (report["accuracy"], 3),
        (report["recall"], 3),
        (report["specificity"], 3),
        (float(np.mean([s["roc_auc"] for s in acquisition + framing])), 4),
        (min(s["recall"] for s in framing), 3),
        (min(s["specificity"] for s in framing), 3),
        (mean_shifted_accuracy(shifted), 3),
        (calibration.get("ece_shifted_after", nan), 4),
        (report.get("cam_frame_share", nan), 2),
    ]
    return [f"{v:.{digits}f}" for v, digits in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--names", nargs="*", default=None)
    parser.add_argument("--shifts", action="store_true")
    parser.add_argument("--groups", nargs="*", default=[], help="name prefixes: one mean ± sd line per group")
    args = parser.parse_args()
    names = args.names or [r.name for r in args.runs]
    reports = {name: json.loads((run / "val_report.json").read_text()) for name, run in zip(names, args.runs)}
    for run, report in zip(args.runs, reports.values()):
        report["shifted"] = shifted_report(run, report)
    columns = [
        "model",
        "threshold",
        "T",
        "val ROC AUC",
        "val accuracy",
        "val sensitivity",
        "val specificity",
        "shifted ROC AUC (mean of 14)",
        "framing sensitivity (worst)",
        "framing specificity (worst)",
        "accuracy at 62.5% (mean of 14)",
        "ECE under shifts",
        "CAM frame share",
    ]
    print(
        table(
            "The development signal (validation images none of these models trained on)",
            columns,
            [[n, *summary(r)] for n, r in reports.items()],
        )
    )
    if args.groups:
        rows = []
        for group in args.groups:
            values = np.array([[float(v) for v in summary(r)] for n, r in reports.items() if n.startswith(group)])
            if len(values):
                rows.append(
                    [
                        f"{group} ({len(values)} models)",
                        *(f"{m:.4f} ± {s:.4f}" for m, s in zip(values.mean(axis=0), values.std(axis=0, ddof=1))),
                    ]
                )
        print(table("Mean ± sd per group", columns, rows))
    if args.shifts:
        rows = [
            [
                shift,
                *(
                    f"{r['shifted'][shift]['roc_auc']:.4f} / {r['shifted'][shift]['recall']:.3f} / {r['shifted'][shift]['specificity']:.3f}"
                    for r in reports.values()
                ),
            ]
            for shift in next(iter(reports.values()))["shifted"]
        ]
        print(table("Per shift: ROC AUC / sensitivity / specificity at each model's threshold", ["validation images", *names], rows))


if __name__ == "__main__":
    main()
