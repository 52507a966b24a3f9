"""Cost and quality of candidate models against a reference (the ensemble): what a smaller, distilled model keeps.

    python benchmarks/bench_students.py runs/students/r18h-160-s0 runs/students/r10h-192-s0 --reference /tmp/ensemble [--int8] [--rounds 3]

For each model (a run or model folder; the reference first) one table row:
- cost: multiply-accumulates per film of its convolutions and linear layers (GMACs; the content
  crop and the input check's statistics are a few more), and through onnxruntime the time from file
  to verdict for one film (p50 and p95 over `--images` films, input checks included) and the films
  per second in batches of 32, measured in `--rounds` alternating rounds so that every model meets
  the same machine;
- signal (from its val_report.json, the validation films none of them trained on): mean accuracy
  at 62.5% pneumonia over the 14 shifted copies, the worst framing sensitivity and specificity,
  validation ROC AUC, ECE pooled over the shifted copies, and the input check's false alarms on
  validation children and adult films from unseen sources caught;
- whether it holds the reference's signal: within 0.003 of its mean shifted accuracy, within 0.01 of
  its worst framing sensitivity and specificity, within 0.001 of its ROC AUC, no more false alarms
  and no fewer adult films caught; otherwise the columns that fail, by how much.

With --int8, each candidate's int8 export is measured too (`pneumo export --int8`): its cost, its
verdicts against PyTorch, and its signal recomputed through the int8 graph.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DATA, shifted_report, table

from pneumo.data.layout import discover
from pneumo.evaluation.robustness import FRAMING_SHIFTS, SHIFTS
from pneumo.deploy.onnx import export
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import load_model, predict
from pneumo.models.checkpoint import read_meta, resolve_checkpoint

# how far a candidate may fall behind the reference and still hold its signal
TOLERANCE = {"mean shifted accuracy": 0.003, "worst framing sensitivity": 0.01, "worst framing specificity": 0.01, "val ROC AUC": 0.001}


def gmacs(model) -> float:
    """Multiply-accumulates of one film through the network's convolutions and linear layers, in billions."""
    total = [0]

    def count(module: torch.nn.Module, _: object, out: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv2d):
            total[0] += out.numel() // out.shape[0] * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total[0] += module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in model.net.modules()]
    with torch.inference_mode():
        model.net.eval()(torch.zeros(1, 1, model.image_size, model.image_size).contiguous(memory_format=torch.channels_last))
    for h in handles:
        h.remove()
    return total[0] / 1e9


def signal(folder: Path, report: dict) -> dict[str, float]:
    shifted = shifted_report(folder.parent if (folder.parent / "split.csv").is_file() else folder, report)
    framing = [shifted[k] for k in FRAMING_SHIFTS]
    check = report.get("input_check") or {}
    return {
        "mean shifted accuracy": float(np.mean([shifted[k]["accuracy_at_prevalence"] for k in SHIFTS])),
        "worst framing sensitivity": min(s["recall"] for s in framing),
        "worst framing specificity": min(s["specificity"] for s in framing),
        "val ROC AUC": report["roc_auc"],
        "ECE under shifts": (report.get("calibration") or {}).get("ece_shifted_after", float("nan")),
        "val false alarms": check.get("val_false_alarm_rate", float("nan")),
        "adult caught": check.get("outlier_catch_rate", float("nan")),
    }


def validation_split(folder: Path, tmp: Path) -> Path:
    """The model's split.csv: its run's, or for a model folder without one (the bundled model), drawn again from its recipe."""
    if (folder.parent / "split.csv").is_file():
        return folder.parent / "split.csv"
    from pneumo.data.split import write_split
    from pneumo.training.data import model_recipe, split_training_records

    train, val = split_training_records(model_recipe(read_meta(folder).config, folder, DATA))
    path = tmp / f"split-{abs(hash(folder))}.csv"
    write_split(path, {"train": train, "val": val})
    return path


def holds(candidate: dict[str, float], reference: dict[str, float]) -> str:
    """'yes', or the columns that fall behind the reference, by how much."""
    fails = [f"{k} {candidate[k] - reference[k]:+.4f}" for k, tol in TOLERANCE.items() if candidate[k] < reference[k] - tol]
    if candidate["val false alarms"] > reference["val false alarms"]:
        fails.append(f"val false alarms {candidate['val false alarms'] - reference['val false alarms']:+.4f}")
    if candidate["adult caught"] < reference["adult caught"]:
        fails.append(f"adult caught {candidate['adult caught'] - reference['adult caught']:+.4f}")
    return "yes" if not fails else "no: " + "; ".join(fails)


def timings(graphs: dict[str, OnnxModel], files: list[Path], n_single: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    """p50 and p95 ms for one file, and files/s in batches of 32, each model measured in turn in every round."""
    single: dict[str, list[float]] = {k: [] for k in graphs}
    batched: dict[str, list[float]] = {k: [] for k in graphs}
    for graph in graphs.values():
        predict(files[:4], model=graph)  # warm-up
    for _ in range(rounds):
        for name, graph in graphs.items():
            for f in files[:n_single]:
                start = time.perf_counter()
                predict([f], model=graph)
                single[name].append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            predict(files, model=graph, batch_size=32)
            batched[name].append(len(files) / (time.perf_counter() - start))
    return {k: (float(np.percentile(single[k], 50)), float(np.percentile(single[k], 95)), float(np.median(batched[k]))) for k in graphs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="run or model folders of the candidates")
    parser.add_argument("--reference", type=Path, default=None, help="the model to hold the signal of (default: the bundled one)")
    parser.add_argument("--images", type=int, default=60, help="films timed one at a time, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also each candidate's int8 export")
    args = parser.parse_args()
    from pneumo.inference.predict import bundled_model_dir

    folders = [resolve_checkpoint(args.reference or bundled_model_dir()), *(resolve_checkpoint(m) for m in args.models)]
    names = ["reference: " + (str(args.reference) if args.reference else "bundled"), *(str(m) for m in args.models)]
    files = [r.path for r in discover(DATA / "chest_xray").split("train")[::13]][:256]
    rows, graphs, signals, costs = [], {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in zip(names, folders):
            model = load_model(folder, backend="torch")  # the network itself, to count its arithmetic
            costs[name] = gmacs(model)
            report = json.loads(
                ((folder / "val_report.json") if (folder / "val_report.json").is_file() else folder.parent / "val_report.json").read_text()
            )
            signals[name] = signal(folder, report)
            export(folder, out=Path(tmp) / f"{len(graphs)}.onnx")
            graphs[name] = OnnxModel.load(Path(tmp) / f"{len(graphs)}.onnx")
            if args.int8 and name != names[0]:
                result = export(folder, out=Path(tmp) / f"{len(graphs)}-int8.onnx", int8=True, data=DATA)
                graphs[name + " (int8)"] = OnnxModel.load(result.path)
                costs[name + " (int8)"] = costs[name]
                int8_report = {**report, "input_check": None}
                from pneumo.evaluation.evaluate import evaluate

                evaluated = evaluate(
                    validation_split(folder, Path(tmp)), model=graphs[name + " (int8)"], split="val", n_boot=0, shifts=True, progress=False
                )
                int8_report |= {"shifted": evaluated.shifted, "roc_auc": evaluated.roc_auc}
                quantization = result.int8
                signals[name + " (int8)"] = signal(folder, int8_report) | {
                    "val false alarms": quantization["input_check"]["val_flagged"] / max(1, quantization["input_check"]["n_val"]),
                    "adult caught": quantization["input_check"]["outliers_caught"] / max(1, quantization["input_check"]["n_outliers"]),
                }
        times = timings(graphs, files, args.images, args.rounds)
    reference = names[0]
    for name in graphs:
        p50, p95, per_s = times[name]
        s = signals[name]
        rows.append(
            [
                name,
                f"{costs[name]:.3f}",
                f"{p50:.1f}",
                f"{p95:.1f}",
                f"{per_s:.0f}",
                f"{p50 / times[reference][0]:.2f}",
                f"{per_s / times[reference][2]:.2f}",
                f"{s['mean shifted accuracy']:.4f}",
                f"{s['worst framing sensitivity']:.3f}",
                f"{s['worst framing specificity']:.3f}",
                f"{s['val ROC AUC']:.4f}",
                f"{s['ECE under shifts']:.4f}",
                f"{s['val false alarms']:.2%}",
                f"{s['adult caught']:.1%}",
                "-" if name == reference else holds(s, signals[reference]),
            ]
        )
    print(
        table(
            f"Cost and quality against the reference (onnxruntime, file to verdict, input checks included; {args.rounds} alternating rounds, "
            f"{args.images} single films and {len(files)} in batches of 32 per round)",
            [
                "model",
                "GMACs",
                "p50 ms (1 film)",
                "p95 ms",
                "films/s (batch 32)",
                "p50 / reference",
                "films/s / reference",
                "mean shifted accuracy",
                "worst framing sensitivity",
                "worst framing specificity",
                "val ROC AUC",
                "ECE under shifts",
                "val false alarms",
                "adult caught (unseen sources)",
                "holds the reference's signal",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
