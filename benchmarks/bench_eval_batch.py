"""Why PyTorch inference on a CPU runs in small batches sized by pixels (`torch_backend.cpu_batch_size`).

    python benchmarks/bench_eval_batch.py [--images 256] [--batches 256 64 32 16 8 4]

Images per second of a network in eval mode over random uint8 films, by batch size, with and
without the input check's feature tap (`FeatureTap`, on every evaluate/predict pass): the
notebook's network at 180 px (seed.yaml), at 128 px (cpu.yaml), and the bundled ResNet-18 pair
at 224 px. Run with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import machine, table

from pneumo.data.preprocess import normalise
from pneumo.inference.features import FeatureTap
from pneumo.inference.predict import load_model
from pneumo.models.registry import create_model


def throughput(net: torch.nn.Module, images: torch.Tensor, batch: int, tap: bool) -> float:
    net.eval()
    start = time.perf_counter()
    with torch.inference_mode(), FeatureTap(net) if tap else _nothing():
        for s in range(0, len(images), batch):
            net(normalise(images[s : s + batch], 0.0, 1.0).contiguous(memory_format=torch.channels_last))
    return len(images) / (time.perf_counter() - start)


class _nothing:
    def __enter__(self) -> None: ...
    def __exit__(self, *exc: object) -> None: ...


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 64, 32, 16, 8, 4])
    args = parser.parse_args()
    torch.manual_seed(0)
    nets = {
        "seed_cnn @ 180 px": (create_model("seed_cnn", image_size=180), 180),
        "seed_cnn @ 128 px": (create_model("seed_cnn", image_size=128), 128),
        "bundled pair @ 224 px": (load_model(backend="torch").net, 224),
    }
    batches = args.batches
    rows = []
    for name, (net, size) in nets.items():
        net = net.to(memory_format=torch.channels_last)  # as the inference backend holds it
        images = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (args.images, size, size), dtype=np.uint8))
        throughput(net, images[:16], 16, False)  # warm-up
        for tap in (False, True):
            rows.append([name + (" + feature tap" if tap else ""), *(f"{throughput(net, images, b, tap):.0f}" for b in batches)])
    print(
        table(
            f"Eval images/s on CPU by batch size ({args.images} images)",
            ["network", *(f"batch {b}" for b in batches)],
            rows,
            ran_on=machine(),
        )
    )


if __name__ == "__main__":
    main()
