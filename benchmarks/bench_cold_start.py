"""`pneumo predict one.jpeg` from process start to exit, and where the time goes.

    python benchmarks/bench_cold_start.py [--model DIR] [--runs 5]

Whole commands in new processes (median of `--runs`): the prediction itself, a FIFO refused, and a
bare interpreter for scale. Then one new process timed step by step as the command runs them:
interpreter start, the imports, loading the model (`load_model`'s rule: the bundled model through its
ONNX export), checking and decoding the file, the network with its input check, and the exit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, table

FILM = DATA / "chest_xray" / "train" / "PNEUMONIA" / "person1000_bacteria_2931.jpeg"

STEPS = r"""
import time, json, sys
t = [time.perf_counter()]
import pneumo.cli  # noqa: F401  the command's own imports
from pneumo.inference.predict import load_model, readable_files
from pneumo.inference.classify import classify_images
from pneumo.data.preprocess import load_image_with_info
t.append(time.perf_counter())
files, _ = readable_files([sys.argv[1]])
model = load_model(sys.argv[2] if sys.argv[2] != "-" else None)
t.append(time.perf_counter())
image, info = load_image_with_info(files[0], model.image_size)
t.append(time.perf_counter())
classify_images(image[None], [info], [str(files[0])], model)
t.append(time.perf_counter())
print(json.dumps({"backend": type(model).__name__, "steps": [b - a for a, b in zip(t, t[1:])], "after_start": t[0]}))
"""


def _wall(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    model_args = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "a_fifo.jpeg"
        os.mkfifo(fifo)
        whole = [
            ("python -c pass (an interpreter, for scale)", _wall([sys.executable, "-c", "pass"], args.runs)),
            ("pneumo predict one.jpeg", _wall([sys.executable, "-m", "pneumo", "predict", str(FILM), *model_args], args.runs)),
            ("pneumo predict a_fifo.jpeg (refused)", _wall([sys.executable, "-m", "pneumo", "predict", str(fifo), *model_args], args.runs)),
        ]
    print(
        table(f"Whole commands in new processes (median of {args.runs})", ["command", "seconds"], [(name, f"{s:.2f}") for name, s in whole])
    )
    runs = []
    for _ in range(args.runs):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", STEPS, str(FILM), args.model or "-"], capture_output=True, text=True, check=True).stdout
        total = time.perf_counter() - start
        runs.append((json.loads(out), total))
    names = [
        "imports (pneumo.cli and the prediction path)",
        "checking the file and loading the model",
        "reading and decoding the film",
        "the network and the input check",
    ]
    medians = [statistics.median(r["steps"][i] for r, _ in runs) for i in range(len(names))]
    total = statistics.median(t for _, t in runs)
    rows = [("interpreter start and exit (the rest of the process)", f"{1000 * (total - sum(medians)):.0f}")]
    rows += [(name, f"{1000 * m:.0f}") for name, m in zip(names, medians)] + [("whole process", f"{1000 * total:.0f}")]
    print(
        table(
            f"pneumo predict one.jpeg, step by step in one new process (median of {args.runs}; backend {runs[0][0]['backend']})",
            ["step", "ms"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
