"""Batch inference over a large archive: throughput, peak memory, and resume after a kill.

    python benchmarks/bench_archive.py [--files 50000] [--dir DIR] [--kill-after 60] [--torch] [--ray]

Builds a synthetic archive of --files images (hard links to the training images, spread over
nested folders) and a 10% one beside it, then runs `pneumo.batch.predict_archive` on each in a
fresh process, so the peak resident memory (ru_maxrss) is that of the run alone: if memory is
bounded, it is the same for both sizes. Then it SIGKILLs a run on the large archive after
--kill-after seconds, resumes it, and checks that every file is in the output exactly once.
--torch adds the PyTorch backend and --ray the Ray actor pool (2 actors), on the small archive.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pneumo.inference.batch import iter_source

PER_FOLDER = 100  # files per leaf folder; leaves are grouped 10 to a parent


def build_archive(root: Path, n: int, train: Path) -> Path:
    """n hard links (copies across filesystems) to the training images, as root/dNNN/NN/file."""
    sources = sorted(train.rglob("*.jpeg"))
    if not sources:
        raise SystemExit(f"no training images under {train}")
    for i in range(n):
        leaf = i // PER_FOLDER
        folder = root / f"d{leaf // 10:03d}" / f"{leaf % 10:02d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        src = sources[i % len(sources)]
        target = folder / f"{i:06d}_{src.name}"
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return root


def child(args: argparse.Namespace) -> None:
    """One run in this fresh process; prints its summary and peak memory as JSON."""
    if args.backend == "ray":
        import ray

        from pneumo.inference.ray_batch import predict_archive_ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        summary = predict_archive_ray(args.source, args.out, batch_size=args.batch, concurrency=2)
    else:
        from pneumo.inference.batch import predict_archive

        summary = predict_archive(
            args.source, out=args.out, batch_size=args.batch, workers=args.workers, resume=args.resume, progress=False, backend=args.backend
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "load": os.getloadavg()[0],
                "done": summary.done,
                "skipped": summary.skipped,
                "already_done": summary.already_done,
                "seconds": summary.seconds,
                "rate": summary.images_per_second,
                "peak_mib": peak_mib,
            }
        )
    )


def child_command(source: Path, out: Path, backend: str, args: argparse.Namespace, resume: bool = False) -> list[str]:
    """This script as a child predicting `source` into `out`."""
    command = [sys.executable, __file__, "--child", "--source", str(source), "--out", str(out), "--backend", backend]
    return command + ["--batch", str(args.batch), "--workers", str(args.workers)] + (["--resume"] if resume else [])


def run_child(source: Path, out: Path, backend: str, args: argparse.Namespace, resume: bool = False) -> dict:
    command = child_command(source, out, backend, args, resume)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def kill_and_resume(source: Path, out: Path, args: argparse.Namespace) -> tuple[list, bool]:
    """SIGKILL a run mid-way, resume it, and check the output lists every file exactly once."""
    command = child_command(source, out, "onnx", args)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(args.kill_after)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = out.read_bytes() if out.exists() else b""
    rows_at_kill = max(0, written.count(b"\n") - 1)
    cut_mid_row = bool(written) and not written.endswith(b"\n")
    resumed = run_child(source, out, "onnx", args, resume=True)
    with out.open(newline="") as f:
        paths = [row["path"] for row in csv.DictReader(f)]
    expected = set(iter_source(source)())
    duplicates = len(paths) - len(set(paths))
    missing, extra = len(expected - set(paths)), len(set(paths) - expected)
    ok = (
        duplicates == missing == extra == 0
        and rows_at_kill == resumed["already_done"]
        and len(paths) == len(expected) == rows_at_kill + resumed["done"]
    )
    row = [
        f"SIGKILL after {args.kill_after:g} s, then --resume",
        len(expected),
        "onnx",
        round(resumed["rate"], 1),
        round(resumed["peak_mib"]),
        round(resumed["load"], 1),
        f"{rows_at_kill} rows at the kill{' (last one cut mid-row)' if cut_mid_row else ''}; resume found {resumed['already_done']}, "
        f"did {resumed['done']}; final {len(paths)} rows, {duplicates} duplicates, {missing} missing: {'OK' if ok else 'FAILED'}",
    ]
    return row, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the archive (default: a temporary folder, removed after)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--kill-after", type=float, default=60.0)
    parser.add_argument("--torch", action="store_true", help="also the PyTorch backend, on the small archive")
    parser.add_argument("--ray", action="store_true", help="also Ray Data with 2 actors, on the small archive")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="onnx", help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from common import DATA, table  # not in the child: common imports torch, which would count in its memory

    root = Path(tempfile.mkdtemp(prefix="pneumo-archive-", dir=args.dir))
    try:
        start = time.perf_counter()
        large = build_archive(root / "large", args.files, DATA / "chest_xray" / "train")
        small = build_archive(root / "small", args.files // 10, DATA / "chest_xray" / "train")
        print(f"built {args.files} + {args.files // 10} files in {time.perf_counter() - start:.0f} s under {root}", file=sys.stderr)
        runs = [(small, "onnx")] + [(small, "torch")] * args.torch + [(small, "ray")] * args.ray + [(large, "onnx")]
        rows = []
        for i, (source, backend) in enumerate(runs):
            result = run_child(source, root / f"run{i}.csv", backend, args)
            print(f"{backend} on {source.name}: {result}", file=sys.stderr)
            rows.append(
                [
                    f"{source.name} archive, {'predict_archive_ray' if backend == 'ray' else 'predict_archive'}",
                    result["done"],
                    backend,
                    round(result["rate"], 1),
                    round(result["peak_mib"]),
                    round(result["load"], 1),
                    f"{result['seconds']:.0f} s, {result['skipped']} skipped"
                    + ("; memory of the driver only (the actors are processes of their own)" if backend == "ray" else ""),
                ]
            )
        row, resumed_ok = kill_and_resume(large, root / "killed.csv", args)
        rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        table(
            f"Batch inference over a synthetic archive (hard links to the 5,216 training JPEGs, 224 px; batch {args.batch}, "
            f"{args.workers or min(4, os.cpu_count() or 1)} decoding threads)",
            ["run", "files", "backend", "images/s", "peak RSS MiB", "load avg at end", "notes"],
            rows,
        )
    )
    if not resumed_ok:
        raise SystemExit("resume check FAILED")


if __name__ == "__main__":
    main()
