"""PyTorch vs onnxruntime on CPU for one model: single-image latency from file to probability, and batch throughput.

    python benchmarks/bench_backends.py [--model RUN_DIR] [--images 100] [--batch 64]

Without --model, the bundled model. The ONNX file is exported to a temporary folder first
(with the parity check on real images), so both backends run the same weights on the same pixels;
a checkpoint with its own export beside it (the bundled model's int8 graph) gets a row for that too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch
from common import DATA, table

from pneumo.data.layout import discover
from pneumo.data.preprocess import load_image
from pneumo.deploy.onnx import export
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import load_model, predict


def measure(run: Callable[[list[Path], int], object], files: list[Path], n_single: int, batch: int) -> tuple[float, float, float]:
    """p50 and p95 ms for one file at a time, and images/s over all files in batches."""
    run(files[:3], batch)  # warm-up
    latencies = []
    for f in files[:n_single]:
        start = time.perf_counter()
        run([f], batch)
        latencies.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
    run(files, batch)
    throughput = len(files) / (time.perf_counter() - start)
    return round(float(np.percentile(latencies, 50)), 1), round(float(np.percentile(latencies, 95)), 1), round(throughput, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    files = [r.path for r in discover(DATA).split("train")[::7]][: max(args.images, args.batch * 4)]
    model = load_model(args.model, backend="torch")  # the PyTorch side of the comparison
    with tempfile.TemporaryDirectory() as tmp:
        check = np.stack([load_image(f, model.image_size) for f in files[:16]])
        exported = export(model, out=Path(tmp) / "model.onnx", check_images=check)
        onnx_model = OnnxModel.load(exported.path)
        backends = {
            f"torch {torch.__version__}": lambda fs, b: predict(fs, model=model, batch_size=b),
            f"onnxruntime {ort.__version__}": lambda fs, b: predict(fs, model=onnx_model, batch_size=b),
        }
        own = load_model(args.model, backend="auto")  # the export shipped beside the checkpoint, where there is one
        if isinstance(own, OnnxModel):
            kind = "int8" if own.export.get("quantization") else "float"
            backends[f"onnxruntime {ort.__version__}, its own {kind} export"] = lambda fs, b: predict(fs, model=own, batch_size=b)
        rows = []
        for backend, run in backends.items():
            p50, p95, throughput = measure(run, files, args.images, args.batch)
            rows.append((backend, p50, p95, args.batch, throughput))
    name = f"{model.meta.architecture} @ {model.image_size}px"
    print(
        table(
            f"CPU inference backends, {name}, file -> probability (onnxruntime with its default threads; "
            f"parity max |dP| {exported.max_abs_diff:.1e})",
            ["backend", "p50 ms (1 image)", "p95 ms (1 image)", "batch", "images/s (batched)"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
