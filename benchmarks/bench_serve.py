"""Load test of `pneumo serve` on loopback: concurrent clients posting real films to /v1/predict.

    python benchmarks/bench_serve.py [--clients 8] [--requests 400] [--cam]

Starts the service in a subprocess on 127.0.0.1 (a free port), waits for /healthz, sends
`--requests` uploads in all from `--clients` threads, and stops the service. Bounded: every
request has a timeout, and the run stops after `--max-seconds`.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from common import DATA, table

from pneumo.data.layout import discover


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
    args = parser.parse_args()
    files = [r.path for r in discover(DATA).split("train")[::13]][:100]
    payloads = [(f.name, f.read_bytes()) for f in files]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "pneumo", "serve", "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_healthy(url)
        deadline = time.monotonic() + args.max_seconds
        params = {"cam": "true"} if args.cam else {}

        def one(i: int) -> tuple[float, bool]:
            if time.monotonic() > deadline:
                return float("nan"), False
            name, data = payloads[i % len(payloads)]
            start = time.perf_counter()
            try:
                response = httpx.post(f"{url}/v1/predict", params=params, files={"file": (name, data)}, timeout=60)
                ok = response.status_code == 200 and "label" in response.json()
            except httpx.HTTPError:
                ok = False
            return 1000 * (time.perf_counter() - start), ok

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = np.array([ms for ms, ok in results if ok])
    errors = sum(not ok for _, ok in results)
    row = (args.clients, args.requests, "yes" if args.cam else "no", round(len(latencies) / wall, 1),
           round(float(np.percentile(latencies, 50)), 1) if len(latencies) else "-",
           round(float(np.percentile(latencies, 95)), 1) if len(latencies) else "-", errors, round(wall, 1))
    print(table("pneumo serve under load (loopback, bundled model)",
                ["clients", "requests", "heatmap", "requests/s", "p50 ms", "p95 ms", "errors", "wall s"], [row]))


if __name__ == "__main__":
    main()
