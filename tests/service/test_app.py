"""The HTTP API over real files: answers, heatmaps, warnings, and every way an upload can be wrong."""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pneumo.errors import PneumoError
from pneumo.inference.predict import load_model, predict
from pneumo.service.app import create_app
from tests.conftest import BUNDLED_SIZE, SAMPLES, TRAIN


@pytest.fixture(scope="module")
def film(shared_data: Path) -> Path:
    """The first PNEUMONIA film, looked up when a test asks for it: importing this module reads no data."""
    return sorted((TRAIN / "PNEUMONIA").glob("*.jpeg"))[0]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


def _post(client: TestClient, name: str, data: bytes, **params: object):
    return client.post("/v1/predict", params=params, files={"file": (name, data, "application/octet-stream")})


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_health_model_page_and_docs(client: TestClient) -> None:
    health = client.get("/healthz").json()
    model = client.get("/v1/model").json()
    assert health["status"] == "ok" and health["model"] == model["id"]
    assert model["architecture"] == load_model().meta.architecture and model["classes"] == ["NORMAL", "PNEUMONIA"]
    assert 0 < model["threshold"] < 1 and model["val_metrics"]["roc_auc"] > 0.98
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "not a medical device" in page.text.lower()
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"] and client.get("/docs").status_code == 200


def test_docs_load_nothing_from_another_host(client: TestClient) -> None:
    """/docs is Swagger UI from the installed environment: every script, stylesheet and icon it names
    is served here, so it works offline; FastAPI's CDN pages are off."""
    import re

    html = client.get("/docs")
    assert html.status_code == 200 and "SwaggerUIBundle" in html.text
    assert not re.search(r"(https?:)?//", html.text), "an absolute URL in /docs"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert len(assets) == 3  # script, stylesheet, icon
    kinds = {client.get(url).headers["content-type"].split(";")[0] for url in assets if client.get(url).status_code == 200}
    assert kinds == {"text/javascript", "text/css", "image/png"}
    assert "url: '/openapi.json'" in html.text and client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404 and client.get("/docs/oauth2-redirect").status_code == 404


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_an_http_0_9_request_gets_an_error_not_the_page(client: TestClient, parser: str) -> None:
    """uvicorn's parsers take a request line without a version (llhttp) or with HTTP/0.9 (both) and
    pass it on as version "0.9"; the app answers 505 instead of the page, and a bare line whose
    client stops sending is dropped."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(client.app, http=parser, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def ask(request: bytes, hang_up: bool = False) -> bytes:
        with socket.create_connection(sock.getsockname(), timeout=10) as conn:
            conn.sendall(request)
            if hang_up:  # uvicorn closes a half-closed connection without answering
                conn.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
            return answer

    try:
        while not server.started:
            time.sleep(0.05)
        assert ask(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
        for request in (b"GET / HTTP/0.9\r\n\r\n", b"GET /\r\n\r\n", b"GET /docs HTTP/0.9\r\n\r\n"):
            answer = ask(request)
            assert b"<html" not in answer.lower() and b"200 OK" not in answer, (request, answer[:200])
            assert answer.startswith((b"HTTP/1.1 505", b"HTTP/1.1 400")), (request, answer[:200])  # h11 refuses the bare line itself
        assert ask(b"GET /\r\n", hang_up=True) == b""
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_the_model_endpoint_says_whether_it_was_calibrated_to_a_site(client: TestClient, tmp_path: Path) -> None:
    from pneumo.evaluation.calibrate import calibrate

    assert client.get("/v1/model").json()["site_calibration"] is None  # the bundled model as shipped
    calibrate(None, out=tmp_path / "site", prevalence=0.3, n_boot=0, progress=False)
    site = TestClient(create_app(tmp_path / "site")).get("/v1/model").json()["site_calibration"]
    assert site["prevalence"] == 0.3 and site["prevalence_source"] == "given" and site["labelled_films"] == 0 and site["created"]
    assert site["previous_threshold"] == load_model().threshold and "accuracy at a prevalence of 0.3" in site["decision"]


def test_a_film_gets_the_same_answer_as_the_library(client: TestClient, film: Path) -> None:
    answer = _post(client, film.name, film.read_bytes()).json()
    expected = predict([film])[0]
    assert answer["probability"] == pytest.approx(expected.probability, abs=1e-5)
    assert answer["label"] == expected.label and answer["threshold"] == expected.threshold
    assert answer["warnings"] == [] and answer["cam"] is None and answer["filename"] == film.name
    assert answer["input"]["format"] == "JPEG" and answer["model"]["id"].startswith(f"{load_model().meta.architecture}-")
    fields = expected.to_dict()  # the one serialisation, `path` called `filename`, then what only the service knows
    assert set(answer) == {"filename", *fields, "input", "model", "cam"} - {"path"}


def test_heatmap_on_request(client: TestClient, film: Path) -> None:
    cam = _post(client, film.name, film.read_bytes(), cam="true").json()["cam"]
    image, heatmap, overlay = _png(cam["image_png"]), _png(cam["heatmap_png"]), _png(cam["overlay_png"])
    assert image.size == heatmap.size == overlay.size == (BUNDLED_SIZE, BUNDLED_SIZE)
    assert (image.mode, heatmap.mode, overlay.mode) == ("L", "RGBA", "RGB")
    assert np.asarray(heatmap)[..., :3].std() > 5  # not a flat map


def test_dicom_is_sniffed_and_warned_about(client: TestClient, film: Path) -> None:
    answer = _post(client, "scan.png", (SAMPLES / "dicom" / "not_a_chest_ot.dcm").read_bytes(), cam="true").json()
    assert answer["input"]["format"] == "DICOM" and answer["input"]["modality"] == "OT"
    assert any("modality is OT" in w for w in answer["warnings"])
    assert _png(answer["cam"]["image_png"]).size == (BUNDLED_SIZE, BUNDLED_SIZE)
    # no verdict for what the model cannot judge, unless asked for one
    assert answer["abstain"] is True and answer["label"] is None and "modality is OT" in answer["abstain_reason"]
    forced = _post(client, "scan.png", (SAMPLES / "dicom" / "not_a_chest_ot.dcm").read_bytes(), abstain="false").json()
    assert forced["abstain"] is False and forced["label"] in ("NORMAL", "PNEUMONIA") and forced["warnings"] == answer["warnings"]
    plain = _post(client, film.name, film.read_bytes()).json()
    assert plain["abstain"] is False and plain["abstain_reason"] is None and plain["label"] == "PNEUMONIA"


def test_heatmaps_are_as_bright_as_the_model_is_sure(client: TestClient, shared_data: Path) -> None:
    normal = sorted((TRAIN / "NORMAL").glob("*.jpeg"))[0]
    answer = _post(client, normal.name, normal.read_bytes(), cam="true").json()
    assert answer["probability"] < 0.05 and "P(pneumonia)" in answer["cam"]["scale"]
    assert np.asarray(_png(answer["cam"]["heatmap_png"]))[..., 3].max() <= 255 * answer["probability"] + 1  # no red on a confident NORMAL


@pytest.mark.parametrize(
    "name, data, status, fragment",
    [
        ("notes.jpeg", lambda film: b"these are not pixels", 400, "notes.jpeg: not a readable"),
        ("empty.png", lambda film: b"", 400, "empty"),
        ("cut.jpeg", lambda film: film.read_bytes()[:2000], 400, "cut.jpeg"),
    ],
    ids=["text", "empty", "truncated"],
)
def test_bad_images_are_400_with_a_message(
    client: TestClient, film: Path, name: str, data: Callable[[Path], bytes], status: int, fragment: str
) -> None:
    response = _post(client, name, data(film))
    assert response.status_code == status and fragment in response.json()["error"]


def test_a_decompression_bomb_is_refused_before_decoding(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")  # 81 MP in a few hundred KB
    response = _post(client, "bomb.png", buffer.getvalue())
    assert response.status_code == 400 and "over the limit" in response.json()["error"]


def test_wrong_requests_get_json_errors(client: TestClient, film: Path) -> None:
    missing = client.post("/v1/predict", files={"image": ("x.jpeg", film.read_bytes())})
    assert missing.status_code == 422 and "'file'" in missing.json()["error"]
    raw = client.post("/v1/predict", content=film.read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["error"]
    assert client.get("/v1/nothing").status_code == 404 and "error" in client.get("/v1/nothing").json()
    bad_flag = _post(client, film.name, film.read_bytes(), cam="maybe")
    assert bad_flag.status_code == 422 and "cam" in bad_flag.json()["error"]


def test_uploads_over_the_limit_are_413_and_nothing_touches_the_disk(film: Path) -> None:
    small = TestClient(create_app(max_upload_mb=0.5))
    before = set(os.listdir(tempfile.gettempdir()))
    big = np.random.default_rng(0).integers(0, 256, (1200, 1200), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")  # ~1.4 MB of noise
    assert len(buffer.getvalue()) > 2**20
    response = _post(small, "big.png", buffer.getvalue())
    assert response.status_code == 413 and "0.5 MB" in response.json()["error"]
    assert _post(small, film.name, film.read_bytes()).status_code == 200
    assert set(os.listdir(tempfile.gettempdir())) == before


def test_an_onnx_export_serves_without_heatmaps(tmp_path: Path, film: Path) -> None:
    from pneumo.inference.predict import bundled_model_dir

    onnx = TestClient(create_app(bundled_model_dir() / "pneumo.onnx"))
    answer = _post(onnx, film.name, film.read_bytes(), cam="true").json()
    assert answer["cam"] is None and any("ONNX" in w for w in answer["warnings"])
    assert answer["probability"] == pytest.approx(predict([film])[0].probability, abs=1e-4)


def test_metrics_count_requests_batches_and_verdicts(client: TestClient, film: Path) -> None:
    _post(client, film.name, film.read_bytes())
    _post(client, "notes.jpeg", b"not pixels")
    text = client.get("/metrics").text
    assert 'pneumo_requests_total{method="POST",path="/v1/predict",status="200"}' in text
    assert 'pneumo_errors_total{status="400"}' in text and "pneumo_batch_size_count" in text
    assert 'pneumo_request_seconds_bucket{le="0.005",path="/v1/predict"}' in text
    assert any(line.startswith("pneumo_predictions_total{outcome=") for line in text.splitlines())
    client.get("/no/such/page/" + "x" * 50)
    assert "/no/such" not in client.get("/metrics").text  # unknown paths share one label


def test_every_request_gets_an_access_log_line(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="pneumo.service.access"):
        client.get("/healthz")
        _post(client, "notes.jpeg", b"not pixels")
    lines = [r.getMessage() for r in caplog.records if r.name == "pneumo.service.access"]
    assert any('"GET /healthz" 200' in line for line in lines) and any('"POST /v1/predict" 400' in line for line in lines)


def test_the_bundled_model_answers_through_onnxruntime_and_draws_heatmaps_with_torch(film: Path) -> None:
    from pneumo.inference.onnx_backend import OnnxModel
    from pneumo.inference.torch_backend import TorchModel
    from pneumo.service.app import _Service
    from pneumo.service.metrics import ServiceMetrics

    service = _Service(load_model(), load_model(backend="torch"), 10**7, ServiceMetrics())
    assert isinstance(service.model, OnnxModel) and isinstance(service.cam_model, TorchModel)
    job = service.decode(film.name, film.read_bytes(), cam=False, abstain=True)
    plain, with_cam = service.run_batch([job, dataclasses.replace(job, cam=True)])
    assert plain["cam"] is None and with_cam["cam"] is not None
    assert plain["probability"] == pytest.approx(with_cam["probability"], abs=1e-5) and plain["label"] == with_cam["label"]
    # its heatmaps (bf16 where the CPU has it) are the fp32 Grad-CAM's, to a shade
    from pneumo.explain.gradcam import grad_cam, weighted_by_probability

    images, probability = np.stack([job.image, job.image]), np.array([0.9, 0.9])
    served, exact = service._heatmaps(images, probability), weighted_by_probability(grad_cam(service.cam_model, images), probability)
    assert np.abs(served - exact).max() < 0.06 and np.abs(served - exact).mean() < 0.005


def test_concurrent_uploads_share_forward_passes(client: TestClient, shared_data: Path) -> None:
    films = sorted((TRAIN / "NORMAL").glob("*.jpeg"))[:16]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda f: _post(client, f.name, f.read_bytes()), films))
    assert [a.status_code for a in answers] == [200] * 16
    assert [a.json()["filename"] for a in answers] == [f.name for f in films]  # each answer is its own film's
    expected = predict(films)
    assert [a.json()["probability"] for a in answers] == pytest.approx([p.probability for p in expected], abs=1e-5)


def test_a_classification_error_in_a_batch_is_the_clients_422_and_a_bug_stays_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, film: Path
) -> None:
    import pneumo.service.app as app_module
    from pneumo.inference.base import non_finite_error

    real = app_module.classify_images

    def classify(images, infos, names, model, abstain):  # type: ignore[no-untyped-def]
        if "nan.jpeg" in names:
            raise non_finite_error("nan.jpeg", [float("nan")])
        if "bug.jpeg" in names:
            raise RuntimeError("a genuine bug")
        return real(images, infos, names, model, abstain)

    monkeypatch.setattr(app_module, "classify_images", classify)
    client = TestClient(client.app, raise_server_exceptions=False)  # answer a bug as a server does: 500, not re-raised here
    data = film.read_bytes()
    with ThreadPoolExecutor(3) as pool:  # in one micro-batch: the good film still gets its answer
        good, bad, bug = pool.map(lambda name: _post(client, name, data), [film.name, "nan.jpeg", "bug.jpeg"])
    assert good.status_code == 200 and good.json()["filename"] == film.name
    assert bad.status_code == 422 and "non-finite probability for nan.jpeg" in bad.json()["error"]
    assert bug.status_code == 500 and bug.json()["error"].startswith("internal error (RuntimeError)")


def test_monitors_may_ask_with_head(client: TestClient) -> None:
    """HEAD on the page, /healthz, /v1/model and /metrics answers as GET does, without a body."""
    for path in ("/", "/healthz", "/v1/model", "/metrics"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path
    assert client.head("/v1/predict").status_code == 405


def test_decodes_share_a_pixel_budget_and_one_too_large_runs_alone() -> None:
    import threading
    import time

    from pneumo.service.app import PixelBudget

    budget, seen, lock = PixelBudget(100), [], threading.Lock()

    def decode(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                seen.append((budget.used, pixels))
            time.sleep(0.02)

    threads = [threading.Thread(target=decode, args=(n,)) for n in (60, 60, 30, 30, 30, 150, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(seen) == 7 and budget.used == 0  # everyone decoded, and gave the pixels back
    assert all(used <= 100 or used == pixels for used, pixels in seen)  # within the budget, or alone


def test_a_client_gone_mid_upload_is_one_log_line_and_a_count(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    app = client.app
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpeg"\r\n\r\n\xff\xd8\xff'
    messages = iter([{"type": "http.request", "body": body, "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "scheme": "http",
        "root_path": "",
    }
    with caplog.at_level("INFO"):
        asyncio.run(app(scope, receive, send))
    lines = [r for r in caplog.records if "/v1/predict" in r.getMessage() or r.exc_info]
    assert len(lines) == 1 and lines[0].exc_info is None and " 499 " in lines[0].getMessage()
    assert 'pneumo_requests_total{method="POST",path="/v1/predict",status="499"}' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            {"model": 3},
            "model must be a run or checkpoint folder, an exported .onnx, a loaded model, or None for the bundled one; got 3 (int)",
        ),
        ({"max_upload_mb": float("nan")}, "max_upload_mb must be a positive number; got nan (float)"),
        ({"max_upload_mb": True}, "got True (bool)"),
        ({"max_pixels": 0}, "max_pixels must be a whole number of at least 1; got 0 (int)"),
        ({"max_pixels": 1.5e6}, "got 1500000.0 (float)"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_a_wrong_setting_is_refused_before_the_model_loads(wrong: dict, message: str) -> None:
    with pytest.raises(PneumoError) as err:
        create_app(**wrong)
    assert str(err.value) == message or message in str(err.value)
