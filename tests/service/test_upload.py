"""Reading uploads: floods, odd bodies and slow clients each get their own 4xx, quickly."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from pneumo.service import upload
from pneumo.service.app import create_app
from pneumo.service.upload import ApiError
from tests.conftest import TRAIN


@pytest.fixture(scope="module")
def film(shared_data: Path) -> Path:
    """The first NORMAL film, looked up when a test asks for it: importing this module reads no data."""
    return sorted((TRAIN / "NORMAL").glob("*.jpeg"))[0]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


def _multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"XyZ") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n" for headers, data in parts)
    return body + b"--" + boundary + b"--\r\n"


def _post(client: TestClient, body: bytes, content_type: str = "multipart/form-data; boundary=XyZ"):
    return client.post("/v1/predict", content=body, headers={"content-type": content_type})


def test_the_file_field_among_others_is_found(client: TestClient, film: Path) -> None:
    body = _multipart(
        [
            (b'Content-Disposition: form-data; name="note"', b"hello"),
            (b'Content-Disposition: form-data; name="file"; filename="C:\\\\films\\\\a.jpeg"', film.read_bytes()),
        ]
    )
    answer = _post(client, body)
    assert answer.status_code == 200 and answer.json()["filename"] == "a.jpeg"  # path parts dropped


@pytest.mark.parametrize(
    "content_type, status, fragment",
    [
        ("multipart/form-data; boundary=XyZ" + "; a=b" * 200_000, 400, "longer than"),
        ("multipart/form-data", 400, "no valid boundary"),
        ("multipart/form-data; boundary=" + "x" * 71, 400, "no valid boundary"),
        ("application/json", 415, "multipart/form-data"),
    ],
)
def test_bad_content_types(client: TestClient, content_type: str, status: int, fragment: str) -> None:
    start = time.perf_counter()
    answer = _post(client, _multipart([(b'Content-Disposition: form-data; name="file"', b"x")]), content_type)
    assert answer.status_code == status and fragment in answer.json()["error"]
    assert time.perf_counter() - start < 1.0


def test_floods_and_odd_bodies(client: TestClient, film: Path) -> None:
    many = _post(client, _multipart([(b'Content-Disposition: form-data; name="x"', b"y")] * 40))
    assert many.status_code == 400 and "more than 16 parts" in many.json()["error"]
    header_flood = b'Content-Disposition: form-data; name="file"' + b"; a=b" * 200_000
    start = time.perf_counter()
    flooded = _post(client, _multipart([(header_flood, film.read_bytes())]))
    assert flooded.status_code == 400 and "could not be parsed" in flooded.json()["error"] and time.perf_counter() - start < 1.0
    many_headers = b"\r\n".join([b'Content-Disposition: form-data; name="file"'] + [b"X-A: b"] * 50)
    assert _post(client, _multipart([(many_headers, b"x")])).status_code == 400
    inner = _multipart([(b'Content-Disposition: form-data; name="file"', b"x")], b"inner") * 50
    nested = _post(
        client, _multipart([(b'Content-Disposition: form-data; name="outer"\r\nContent-Type: multipart/mixed; boundary=inner', inner)])
    )
    assert nested.status_code == 422 and "no form field named 'file'" in nested.json()["error"]
    assert _post(client, b"garbage without boundaries").status_code in (400, 422)


def test_an_idle_client_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload, "IDLE_SECONDS", 0.05)

    async def slow():
        yield b"--XyZ\r\n"
        await asyncio.sleep(1.0)
        yield b"never"

    async def main_idle() -> ApiError:
        chunks = slow().__aiter__()
        await upload._next_chunk(chunks, time.monotonic() + 10)
        try:
            await upload._next_chunk(chunks, time.monotonic() + 10)
        except ApiError as exc:
            return exc
        raise AssertionError("an idle client was waited for")

    exc = asyncio.run(main_idle())
    assert exc.status == 408 and "too slowly" in exc.message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_health_answers_while_a_big_upload_trickles_in() -> None:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port)) as slow:
            body_size = 20 * 2**20
            slow.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
                + f"Content-Length: {body_size}\r\n\r\n".encode()
                + b'--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
            )
            for _ in range(20):
                slow.sendall(b"\0" * 2**18)  # 5 MB of the 20 MB, then it stalls
            times = []
            for _ in range(5):
                start = time.perf_counter()
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
                times.append(time.perf_counter() - start)
            assert max(times) < 2.0, times  # generous for a loaded machine: blocked, it would wait for the stalled upload (30 s)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--port", "99999"], "port must be a whole number from 1 to 65535"),
        (["--port", "0"], "port must be a whole number from 1 to 65535"),
        (["--max-upload-mb", "0"], "positive number"),
        (["--max-upload-mb", "-1"], "positive number"),
        (["--max-upload-mb", "nan"], "positive number"),
    ],
)
def test_serve_refuses_nonsense_settings_before_listening(args: list[str], fragment: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pneumo", "serve", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr
