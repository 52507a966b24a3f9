"""Data benchmark: cold decode + cache throughput and warm load time of the training set.

python benchmarks/bench_data.py [--sizes 128 180 224] [--workers 1 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import DATA, table

from pneumo.data.cache import cached_images
from pneumo.data.layout import discover


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 180, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 0], help="decoding threads; 0 = all cores")
    args = parser.parse_args()
    records = discover(args.data).split("train")
    rows = []
    for size in args.sizes:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                cached_images(records, size, folder, workers=workers, progress=False)
                cold = time.perf_counter() - start
                warm_times = []
                for _ in range(3):
                    start = time.perf_counter()
                    cached_images(records, size, folder, workers=workers, progress=False)
                    warm_times.append(time.perf_counter() - start)
                warm = min(warm_times)
            rows.append(
                (size, workers or "all", len(records), round(cold, 2), round(len(records) / cold), round(warm, 3), round(cold / warm, 1))
            )
    print(
        table(
            "Decode once, load warm: the training split",
            ["size", "threads", "images", "cold s", "cold images/s", "warm s", "cold / warm"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
