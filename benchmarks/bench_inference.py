"""Inference benchmark on CPU: single-image latency from file to probability, and batch throughput.

    python benchmarks/bench_inference.py [--model RUN_DIR ...] [--images 100]

Without --model, each registry architecture is measured at its default size with fresh
weights (speed does not depend on what the weights are).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DATA, table

from pneumo.data.layout import discover
from pneumo.inference.predict import load_model, predict
from pneumo.models import create_model, model_spec
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CheckpointMeta


def fresh_checkpoint(name: str, folder: Path) -> Path:
    spec = model_spec(name)
    meta = {
        "architecture": name,
        "task": "binary",
        "classes": ["NORMAL", "PNEUMONIA"],
        "num_outputs": 1,
        "image_size": spec.image_size,
        "mean": spec.mean,
        "std": spec.std,
        "threshold": 0.5,
    }
    return save_checkpoint(folder / name, create_model(name, image_size=spec.image_size), CheckpointMeta(**meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", nargs="*", default=None)
    parser.add_argument("--archs", nargs="+", default=["seed_cnn", "resnet18"])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    files = [r.path for r in discover(DATA).split("train")[::7]][: max(args.images, args.batch * 4)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = args.model or [str(fresh_checkpoint(a, Path(tmp))) for a in args.archs]
        for path in models:
            model = load_model(path)
            predict(files[:3], model=model)  # warm-up
            latencies = []
            for f in files[: args.images]:
                start = time.perf_counter()
                predict([f], model=model)
                latencies.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            predict(files, model=model, batch_size=args.batch)
            throughput = len(files) / (time.perf_counter() - start)
            name = f"{model.meta.architecture} @ {model.image_size}px"
            rows.append(
                (
                    name,
                    round(float(np.percentile(latencies, 50)), 1),
                    round(float(np.percentile(latencies, 95)), 1),
                    args.batch,
                    round(throughput, 1),
                )
            )
    print(
        table(
            f"CPU inference, file -> probability ({torch.get_num_threads()} threads)",
            ["model", "p50 ms (1 image)", "p95 ms (1 image)", "batch", "images/s (batched)"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
