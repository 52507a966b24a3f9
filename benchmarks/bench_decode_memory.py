"""Memory a decode takes: small files that decode to very large deep images, one at a time through
`pneumo predict` and several at once through `pneumo serve`.

    python benchmarks/bench_decode_memory.py [--side 13000] [--uploads 8] [--upload-side 7071]

Rows:
- `pneumo predict` on a 16-bit grey PNG and a float32 TIFF of side x side pixels (a few hundred kB
  each: one value repeated), its peak resident memory (the process's high-water mark);
- `pneumo serve` receiving `--uploads` concurrent uploads of a 16-bit PNG of about 50 megapixels
  (the service's pixel limit), its resident memory when idle after a warm-up film and its
  high-water mark after the uploads, read from /proc.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import numpy as np
from bench_serve import free_port, wait_healthy
from common import DATA, table
from PIL import Image

from pneumo.data.layout import discover


def deep_png(path: Path, side: int) -> Path:
    pixels = np.tile(np.linspace(0, 4095, side, dtype=np.uint16), (side, 1))  # one row repeated: compresses to little
    Image.fromarray(pixels).save(path)
    return path


def float_tiff(path: Path, side: int) -> Path:
    pixels = np.tile(np.repeat(np.linspace(0, 1, 16, dtype=np.float32), -(-side // 16))[:side], (side, 1))  # 16 bands: compresses
    Image.fromarray(pixels).save(path, compression="tiff_deflate")
    return path


def predict_peak_mb(path: Path) -> float:
    """Peak resident memory of `pneumo predict FILE`. Linux carries a process's high-water mark
    across fork and exec, so the command is started by a small Python of its own, which reports
    its child's peak: a child of this process would start from this process's size."""
    starter = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [sys.executable, "-W", "ignore", "-m", "pneumo", "predict", str(path)]
    done = subprocess.run([sys.executable, "-c", starter, *command], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=13000)
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--upload-side", type=int, default=7071, help="7071 x 7071 is 50 megapixels")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        png = deep_png(Path(tmp) / "deep.png", args.side)
        tiff = float_tiff(Path(tmp) / "deep.tif", args.side)
        for label, path in (("16-bit PNG", png), ("float32 TIFF", tiff)):
            peak = predict_peak_mb(path)
            rows.append(
                [f"pneumo predict, {label} {args.side}x{args.side}", f"{path.stat().st_size / 1e3:.0f} kB", "-", f"{peak:.0f}", "-"]
            )
        upload = deep_png(Path(tmp) / "upload.png", args.upload_side).read_bytes()
        film = discover(DATA / "chest_xray").split("train")[0].path
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-W", "ignore", "-m", "pneumo", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(url)
            httpx.post(f"{url}/v1/predict", files={"file": (film.name, film.read_bytes())}, timeout=60).raise_for_status()
            idle = rss_mb(server.pid, "VmRSS")
            codes: list[int] = []

            def send() -> None:
                codes.append(httpx.post(f"{url}/v1/predict", files={"file": ("upload.png", upload)}, timeout=300).status_code)

            threads = [threading.Thread(target=send) for _ in range(args.uploads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            peak = rss_mb(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(timeout=30)
        rows.append(
            [
                f"pneumo serve, {args.uploads} concurrent 16-bit PNG uploads of {args.upload_side}x{args.upload_side}",
                f"{len(upload) / 1e3:.0f} kB each",
                f"{idle:.0f}",
                f"{peak:.0f}",
                f"{peak - idle:.0f} (answers {sorted(set(codes))})",
            ]
        )
    print(table("Memory of decoding deep images", ["what", "file", "idle RSS MB", "peak RSS MB", "peak above idle MB"], rows))


if __name__ == "__main__":
    main()
