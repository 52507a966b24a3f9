"""The HTTP service and its page: upload an X-ray, get the verdict, its warnings and a heatmap.

    POST /v1/predict[?cam=true]   multipart form, field `file` (JPEG, PNG or DICOM; TIFF, BMP, WebP and GIF
                                  are read too; sniffed, not trusted by name)
    GET  /v1/model                the model's metadata, validation metrics and site calibration
    GET  /healthz                 liveness
    GET  /metrics                 counters and histograms, Prometheus text format
    GET  /openapi.json, /docs     the API's schema (`pneumo.service.schema`) and Swagger UI, served
                                  from the installed fastapi-swagger package (no CDN)
    GET  /                        the page (static files, no CDN)

The model is loaded once and shared. Uploads stream through python-multipart into memory, off
the event loop, within a size and a time limit, never to disk (`pneumo.service.upload`); each is
decoded in a worker thread, and concurrent requests' images go through the network together
(`pneumo.service.batching`): through onnxruntime where the model has an export (the bundled one
does), through PyTorch with Grad-CAM, batched too, when a heatmap is asked for. Every request
gets an access-log line (logger `pneumo.service.access`); every failure is a JSON body
`{"error": ...}` with a 4xx/5xx status: an upload the model cannot classify (a PneumoError while
its batch runs, such as a non-finite probability) is that request's 422 with the message, and
only a bug is a 500. A request in a protocol version other than HTTP/1.0, 1.1, 2 or 3 (an HTTP/0.9
request line, which uvicorn's parsers accept) is a 505, never the page.

Example:
    >>> import uvicorn
    >>> uvicorn.run(create_app(), host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import base64
import importlib.util
import io
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from threadpoolctl import threadpool_limits

from pneumo.data.io import ImageInfo, decode_image_with_info, pixel_count
from pneumo.data.preprocess import resize_image
from pneumo.errors import PneumoError, check_number, check_text, check_whole
from pneumo.inference.base import Model
from pneumo.inference.classify import classify_images
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.loading import check_model, load_model
from pneumo.models.meta import CheckpointMeta
from pneumo.service.batching import MicroBatcher
from pneumo.service.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from pneumo.service.schema import PREDICT_ERRORS, UPLOAD_BODY, PredictAnswer
from pneumo.service.upload import ApiError, read_upload
from pneumo.version import __version__

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_MB", "create_app", "serve"]

DEFAULT_MAX_UPLOAD_MB = 25.0
# Chest radiographs are at most about 4300 x 3500 (15 MP); 50 MP leaves room and keeps a
# decompression bomb (a small file that decodes to gigabytes) out.
DEFAULT_MAX_PIXELS = 50_000_000
# pixels decoded at once across requests: a decode takes up to ~5 bytes a pixel for a moment (a
# 16-bit image, its array and its 8-bit result), so this bounds that memory near 0.5 GB; many small
# films decode side by side, and an image larger than this waits to decode alone
DECODE_BUDGET_PIXELS = 100_000_000
MAX_BATCH = 32  # images per forward pass; beyond this a CPU gains little and latency grows
# how long a lone request waits for company (chosen with benchmarks/bench_serve.py --cam: long
# enough for concurrent clients to share a batch)
BATCH_WAIT = 0.025
# the protocol versions an ASGI server may report; uvicorn passes an HTTP/0.9 request line on as "0.9"
HTTP_VERSIONS = frozenset({"1.0", "1.1", "2", "3"})
# Swagger UI's script, stylesheet and icon, as the fastapi-swagger package ships them
SWAGGER_ASSETS = ("fastapi_swagger", "resources")
SWAGGER_FILES = {"js": "swagger-ui-bundle.js", "css": "swagger-ui.css", "favicon": "favicon-32x32.png"}
log = logging.getLogger("pneumo.service")
access_log = logging.getLogger("pneumo.service.access")


def _png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)  # much faster than the default 6, files a little larger
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _site_summary(meta: CheckpointMeta) -> dict[str, Any] | None:
    """Whether and how the model was calibrated to a site (`pneumo calibrate`): when, on how many films, at what prevalence."""
    site = meta.site_calibration
    if not site:
        return None
    labelled, unlabeled, prevalence = site.get("labelled") or {}, site.get("unlabeled") or {}, site.get("prevalence") or {}
    return {
        "created": site.get("created"),
        "labelled_films": labelled.get("n", 0),
        "labelled_normal": labelled.get("n_normal", 0),
        "labelled_pneumonia": labelled.get("n_pneumonia", 0),
        "unlabeled_films": unlabeled.get("n", 0),
        "prevalence": prevalence.get("value"),
        "prevalence_source": prevalence.get("source"),
        "decision": site.get("decision"),
        "previous_threshold": (site.get("previous") or {}).get("threshold"),
        "refused_before": unlabeled.get("refused_before"),
        "refused_after": unlabeled.get("refused_after"),
    }


def _model_summary(meta: CheckpointMeta) -> dict[str, Any]:
    return {
        "id": f"{meta.architecture}-{meta.weights_sha256[:12]}",
        "architecture": meta.architecture,
        "task": meta.task,
        "classes": meta.classes,
        "image_size": meta.image_size,
        "threshold": meta.threshold,
        "threshold_method": meta.threshold_method or None,
        "val_metrics": meta.val_metrics or None,
        "val_ci95": meta.val_ci95 or None,
        "pneumo_version": meta.pneumo_version or None,
        "created": meta.created or None,
        "site_calibration": _site_summary(meta),
        "serving_version": __version__,
    }


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure answers `{"error": message}` with its status; nothing leaks a traceback."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        # a client gone mid-upload (CLIENT_GONE) gets no answer; its access-log line and counters say 499
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"invalid request: {where}: {first.get('msg', 'bad value')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"}, status_code=500)


@dataclass(frozen=True)
class _Job:
    """One upload, decoded, waiting for its batch."""

    name: str
    image: np.ndarray  # uint8 [S, S] at the model's size
    info: ImageInfo
    cam: bool
    abstain: bool


def _cam_model(model: str | Path | Model | None) -> Model | None:
    """The PyTorch model that draws heatmaps for a service of `model`: None for an export, or without PyTorch."""
    if isinstance(model, Model):
        return model if not isinstance(model, OnnxModel) else None
    if (model is not None and Path(model).suffix.lower() in (".onnx", ".json")) or importlib.util.find_spec("torch") is None:
        return None
    return load_model(model, backend="torch")


class PixelBudget:
    """At most `limit` pixels held by decodes at once, across threads: a decode waits until what it
    needs fits beside the others' (one larger than the limit waits to run alone)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self.used == 0 or self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield
        finally:
            with self._changed:
                self.used -= pixels
                self._changed.notify_all()


class _Service:
    """The models, loaded once: `model` answers (through `load_model`'s rule: onnxruntime where the checkpoint
    has its own export, as the bundled model does), `cam_model` draws heatmaps (PyTorch; None for an
    ONNX-only service). Only the batcher's worker runs them, one batch at a time."""

    def __init__(self, model: Model, cam_model: Model | None, max_pixels: int, metrics: ServiceMetrics) -> None:
        self.model, self.cam_model, self.max_pixels, self.metrics = model, cam_model, max_pixels, metrics
        self.decoding = PixelBudget(DECODE_BUDGET_PIXELS)
        self.summary = _model_summary(model.meta)
        self.batcher = MicroBatcher(self.run_batch, max_batch=MAX_BATCH, max_wait=BATCH_WAIT, on_batch=metrics.batch_size.observe)

    def decode(self, name: str, data: bytes, cam: bool, abstain: bool) -> _Job:
        try:
            with self.decoding.hold(min(pixel_count(data), self.max_pixels)):  # larger is refused from its header, without decoding
                pixels, info = decode_image_with_info(data, name, size_hint=self.model.image_size, max_pixels=self.max_pixels)
                pixels = resize_image(pixels, self.model.image_size)  # the full-size copy goes before the budget is given back
        except PneumoError as exc:
            raise ApiError(400, str(exc)) from None
        return _Job(name, pixels, info, cam, abstain)

    def run_batch(self, jobs: Sequence[_Job]) -> list[dict[str, Any]]:
        """Answers for a batch, in order: one forward pass per abstain setting in it, and Grad-CAM
        over the requests that ask for a heatmap."""
        answers: list[dict[str, Any] | None] = [None] * len(jobs)
        for abstain in (True, False):
            group = [i for i, job in enumerate(jobs) if job.abstain == abstain]
            if group:
                for i, answer in zip(group, self._answer([jobs[i] for i in group], abstain)):
                    answers[i] = answer
        return answers  # type: ignore[return-value]

    def _answer(self, jobs: list[_Job], abstain: bool) -> list[dict[str, Any]]:
        """Each job's `PredictAnswer`: the prediction as `Prediction.to_dict` serialises it for JSON and
        CSV, its `path` called `filename` (an upload has a file name, not a path; the name is the
        API's schema), then the input, the model and the heatmap; so no field is written twice."""
        images = np.stack([job.image for job in jobs])
        # onnxruntime where there is an export; the PyTorch model only draws the heatmaps
        results = classify_images(images, [job.info for job in jobs], [job.name for job in jobs], self.model, abstain)
        wanted = [k for k, job in enumerate(jobs) if job.cam]
        heatmaps: dict[int, np.ndarray] = {}
        if wanted and self.cam_model is not None:
            maps = self._heatmaps(images[wanted], np.array([results[k].probability for k in wanted]))
            heatmaps = dict(zip(wanted, maps))
        answers = []
        for k, (job, result) in enumerate(zip(jobs, results)):
            self.metrics.predictions.labels("abstain" if result.abstain else str(result.label)).inc()
            fields = result.to_dict()
            answer: dict[str, Any] = {
                "filename": fields.pop("path"),
                **fields,
                "input": job.info.to_dict(),
                "model": {key: self.summary[key] for key in ("id", "architecture", "pneumo_version")},
                "cam": None,
            }
            if k in heatmaps:
                answer["cam"] = heatmaps[k]  # drawn by `pictures`, in the request's own thread
            elif job.cam:
                answer["warnings"].append("no heatmap: this service runs an ONNX export; Grad-CAM needs the PyTorch checkpoint")
            answers.append(answer)
        return answers

    @staticmethod
    def pictures(answer: dict[str, Any], job: _Job) -> dict[str, Any]:
        """The answer with its heatmap drawn as PNGs. Outside the batch: while one request's PNGs
        are encoded the next batch's forward pass runs (heatmaps: 29 requests/s, 33 with this)."""
        heatmap = answer["cam"]
        if not isinstance(heatmap, np.ndarray):
            return answer
        from pneumo.viz.figures import cam_overlay, heatmap_rgba

        return answer | {
            "cam": {
                "image_png": _png_base64(job.image),
                "heatmap_png": _png_base64(heatmap_rgba(heatmap)),
                "overlay_png": _png_base64(cam_overlay(job.image, heatmap)),
                "scale": "Grad-CAM x P(pneumonia): as bright as the model is sure",
            }
        }

    def _heatmaps(self, images: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Grad-CAM x P(pneumonia). The verdicts come from the fp32 pass; a heatmap is a picture, drawn
        with bf16 autocast where the hardware has native bf16 (faster; the maps within 0.04 of fp32's
        on their [0, 1] scale, tests/service/test_app.py)."""
        import torch

        from pneumo.explain.gradcam import grad_cam, weighted_by_probability
        from pneumo.training.optim import bf16_autocast_helps

        device = next(self.cam_model.net.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_autocast_helps(device)):
            return weighted_by_probability(grad_cam(self.cam_model, images), probabilities)


def _add_docs(app: FastAPI) -> None:
    """`/docs`, Swagger UI from the installed environment rather than FastAPI's CDN, so it works offline.
    Without fastapi-swagger (an install older than the `serve` extra's list) there is no `/docs`;
    `/openapi.json` is served either way."""
    if importlib.util.find_spec(SWAGGER_ASSETS[0]) is None:
        log.warning("no /docs: pip install fastapi-swagger (the `serve` extra has it); /openapi.json is served")
        return
    app.mount("/docs/assets", StaticFiles(packages=[SWAGGER_ASSETS]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    @app.head("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy that mounts the app under a path
        assets = {key: f"{root}/docs/assets/{name}" for key, name in SWAGGER_FILES.items()}
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=assets["js"],
            swagger_css_url=assets["css"],
            swagger_favicon_url=assets["favicon"],
            swagger_ui_parameters={"validatorUrl": None},  # else it may fetch a badge from validator.swagger.io
        )


def _check_limits(max_upload_mb: object, max_pixels: object) -> None:
    check_number("max_upload_mb", max_upload_mb, minimum=0, exclusive=True)
    check_whole("max_pixels", max_pixels, minimum=1)


def serve(
    model: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Serve the page and the HTTP API for `model` until interrupted (`pneumo serve`); every setting
    is checked, and the model loaded, before the port is taken."""
    import uvicorn

    check_model("model", model)
    check_text("host", host, accepted="an address to listen on as a str")
    port = check_whole("port", port, minimum=1, maximum=65535)
    application = create_app(model, max_upload_mb=max_upload_mb, max_pixels=max_pixels)
    log.info("pneumo serving on http://%s:%d/ (API docs at /docs, metrics at /metrics); Ctrl-C stops it", host, port)
    uvicorn.run(application, host=host, port=port, log_level="warning")


def create_app(
    model: str | Path | None = None, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_pixels: int = DEFAULT_MAX_PIXELS
) -> FastAPI:
    """The service for one model (a run folder, checkpoint, `.onnx` export, or the bundled model when None).

    Args:
        model: what `pneumo.inference.predict.load_model` accepts.
        max_upload_mb: the largest upload accepted, enforced while the body is read.
        max_pixels: the largest image accepted, judged from its header before decoding.
    """
    check_model("model", model)
    _check_limits(max_upload_mb, max_pixels)
    # numpy's BLAS threads spin after each of the input check's matrix products and take the cores
    # from the network's next pass (docs/speed.md, the web service under load)
    threadpool_limits(1, user_api="blas")
    metrics = ServiceMetrics()
    service = _Service(load_model(model), _cam_model(model), max_pixels, metrics)  # once, shared by every request
    summary = service.summary
    limit = int(max_upload_mb * 2**20)
    static = Path(str(resources.files("pneumo") / "service" / "static"))
    app = FastAPI(
        title="pneumo",
        version=__version__,
        description="Pneumonia on pediatric chest X-rays. Research and education only: not a medical device.",
        docs_url=None,  # FastAPI's own pages load their scripts from a CDN: `_add_docs` serves Swagger UI locally
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    _add_error_handlers(app)

    @app.middleware("http")
    async def http_version(request: Request, call_next: Any) -> Response:
        """HTTP/0.9 (a request line without a version) predates headers and status codes, and uvicorn's
        parsers accept it: it gets an error rather than the page. Inside `access`, so it is logged and counted."""
        version = request.scope.get("http_version", "")
        if version not in HTTP_VERSIONS:
            return JSONResponse({"error": f"HTTP/{version} is not supported; send HTTP/1.1"}, status_code=505)
        return await call_next(request)

    @app.middleware("http")
    async def access(request: Request, call_next: Any) -> Response:
        """One log line and the counters for every request, whatever its outcome."""
        start, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            seconds = time.perf_counter() - start
            metrics.request(request.method, request.url.path, status, seconds)
            client = f"{request.client.host}:{request.client.port}" if request.client else "-"
            access_log.info('%s "%s %s" %d %.1f ms', client, request.method, request.url.path, status, seconds * 1000)

    @app.post("/v1/predict", response_model=PredictAnswer, responses=PREDICT_ERRORS, openapi_extra={"requestBody": UPLOAD_BODY})
    async def predict(request: Request, cam: bool = False, abstain: bool = True) -> JSONResponse:
        """P(pneumonia), the label at the model's threshold, input warnings; no label (`abstain`
        true, with the reason) for an input outside what the model was trained on, unless
        `?abstain=false`; with `?cam=true` the image the model saw, its Grad-CAM heatmap and
        their overlay as base64 PNGs."""
        name, data = await read_upload(request, limit)
        job = await run_in_threadpool(service.decode, name, data, cam, abstain)
        try:
            answer = await service.batcher.submit(job)
        except PneumoError as exc:  # this upload's own failure (the batch was rerun one by one): e.g. a non-finite probability
            raise ApiError(422, str(exc)) from None
        if job.cam:
            answer = await run_in_threadpool(service.pictures, answer, job)
        return JSONResponse(answer)  # plain JSON types already: no re-encoding pass (and so `PredictAnswer` only documents it)

    @app.get("/v1/model")
    @app.head("/v1/model", include_in_schema=False)  # what monitors ask
    async def model_info() -> dict[str, Any]:
        """The served model: architecture, classes, input size, threshold, validation metrics, and whether
        (when, on how many films, at what prevalence) it was calibrated to a site (`site_calibration`, null if not)."""
        return summary

    @app.get("/healthz")
    @app.head("/healthz", include_in_schema=False)  # what monitors ask
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model": summary["id"]}

    @app.get("/metrics", include_in_schema=False)
    @app.head("/metrics", include_in_schema=False)  # what monitors ask
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    @app.head("/", include_in_schema=False)  # what monitors ask
    async def page() -> FileResponse:
        return FileResponse(static / "index.html")

    app.mount("/static", StaticFiles(directory=static), name="static")
    _add_docs(app)
    return app
