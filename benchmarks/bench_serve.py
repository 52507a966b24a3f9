"""Load test of `pneumo serve` on loopback: concurrent clients posting real films to /v1/predict,
against what onnxruntime does with the same films batched, measured in the same run.

    python benchmarks/bench_serve.py [--clients 8] [--requests 400] [--cam]

First the reference: the bundled model's ONNX export over the 100 films, decoded beforehand,
in batches of 32 (`OnnxModel.class_probabilities`, no input check, no HTTP). Then the service
in a subprocess on 127.0.0.1 (a free port): `--requests` uploads in all from `--clients`
threads. Bounded: every request has a timeout, and the run stops after `--max-seconds`.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from common import DATA, table

from pneumo.data.layout import discover
from pneumo.data.preprocess import load_image
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import BUNDLED_ONNX, bundled_model_dir


def onnx_reference(files: list) -> float:
    """Images per second through the bundled export, batched by 32, best of 3."""
    model = OnnxModel.load(bundled_model_dir() / BUNDLED_ONNX)
    images = np.stack([load_image(f, model.image_size) for f in files])
    model.class_probabilities(images[:32], batch_size=32)  # warm-up
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        model.class_probabilities(images, batch_size=32)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service at {url} did not come up in {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--cam", action="store_true", help="ask for the Grad-CAM heatmap with every request")
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument(
        "--no-keep-alive", action="store_true", help="a new connection per request (how this benchmark's clients behaved before)"
    )
    args = parser.parse_args()
    files = [r.path for r in discover(DATA).split("train")[::13]][:100]
    payloads = [(f.name, f.read_bytes()) for f in files]
    reference = onnx_reference(files)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "pneumo", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(url)
        deadline = time.monotonic() + args.max_seconds
        params = {"cam": "true"} if args.cam else {}

        clients = threading.local()  # one keep-alive connection per client thread, as a real client keeps

        def one(i: int) -> tuple[float, bool]:
            if time.monotonic() > deadline:
                return float("nan"), False
            name, data = payloads[i % len(payloads)]
            start = time.perf_counter()
            try:
                if args.no_keep_alive:
                    response = httpx.post(f"{url}/v1/predict", params=params, files={"file": (name, data)}, timeout=60)
                else:
                    if not hasattr(clients, "http"):
                        clients.http = httpx.Client(timeout=60)
                    response = clients.http.post(f"{url}/v1/predict", params=params, files={"file": (name, data)})
                ok = response.status_code == 200 and "label" in response.json()
            except httpx.HTTPError:
                ok = False
            return 1000 * (time.perf_counter() - start), ok

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - started
        sizes = {
            line.split()[0]: float(line.split()[1])
            for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
            if line.startswith("pneumo_batch_size_")
        }
        mean_batch = sizes.get("pneumo_batch_size_sum", 0) / max(sizes.get("pneumo_batch_size_count", 0), 1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = np.array([ms for ms, ok in results if ok])
    errors = sum(not ok for _, ok in results)
    pct = lambda q: round(float(np.percentile(latencies, q)), 1) if len(latencies) else "-"  # noqa: E731
    throughput = len(latencies) / wall
    row = (
        args.clients,
        args.requests,
        "yes" if args.cam else "no",
        "no" if args.no_keep_alive else "yes",
        round(throughput, 1),
        pct(50),
        pct(95),
        pct(99),
        errors,
        round(wall, 1),
        round(mean_batch, 1),
        round(reference, 1),
        f"{throughput / reference:.2f}",
    )
    print(
        table(
            "pneumo serve under load (loopback, bundled model) against onnxruntime batched in the same run",
            [
                "clients",
                "requests",
                "heatmap",
                "keep-alive",
                "requests/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "wall s",
                "mean batch",
                "onnxruntime batched images/s",
                "ratio",
            ],
            [row],
        )
    )


if __name__ == "__main__":
    main()
