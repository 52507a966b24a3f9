"""The HTTP service and its page: upload an X-ray, get the verdict, its warnings and a heatmap.

    POST /v1/predict[?cam=true]   multipart form, field `file` (JPEG, PNG or DICOM; sniffed, not trusted by name)
    GET  /v1/model                the model's metadata and validation metrics
    GET  /healthz                 liveness
    GET  /                        the page (static files, no CDN)

The model is loaded once and shared; inference runs in a worker thread, off the event loop;
uploads are read into memory up to a size limit and never written to disk; every failure is
a JSON body `{"error": ...}` with a 4xx/5xx status.

Example:
    >>> import uvicorn
    >>> uvicorn.run(create_app(), host="127.0.0.1", port=8000)
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import logging
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from pneumo.data.io import decode_image_with_info
from pneumo.data.preprocess import resize_image
from pneumo.errors import PneumoError
from pneumo.inference.base import Model
from pneumo.inference.classify import classify_images
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import load_model
from pneumo.models.meta import CheckpointMeta
from pneumo.version import __version__

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD_MB", "DEFAULT_MAX_PIXELS"]

DEFAULT_MAX_UPLOAD_MB = 25.0
# Chest radiographs are at most about 4300 x 3500 (15 MP); 50 MP leaves room and keeps a
# decompression bomb (a small file that decodes to gigabytes) out.
DEFAULT_MAX_PIXELS = 50_000_000
_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself
log = logging.getLogger("pneumo.serve")


class ApiError(Exception):
    """An error with its HTTP status, answered as {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (whatever Content-Length claims)."""
    too_large = ApiError(413, f"upload is larger than the {limit / 2**20:g} MB limit; send a smaller file")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit + _MULTIPART_OVERHEAD:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _uploaded_file(content_type: str, body: bytes, limit: int) -> tuple[str, bytes]:
    """The multipart field `file`: its file name and bytes, parsed in memory (no temporary files)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "send the image as multipart/form-data with a field named 'file'")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ApiError(400, "the multipart body could not be parsed; send the image as a form field named 'file'")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            data = part.get_payload(decode=True) or b""
            if len(data) > limit:
                raise ApiError(413, f"upload is larger than the {limit / 2**20:g} MB limit; send a smaller file")
            return part.get_filename() or "upload", data
    raise ApiError(422, "no form field named 'file': send the image as multipart/form-data field 'file'")


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
        "serving_version": __version__,
    }


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure answers `{"error": message}` with its status; nothing leaks a traceback."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
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


class _Service:
    """The model loaded once, and one upload's answer; the input checks and Grad-CAM hook the
    shared network, so one request at a time runs in it."""

    def __init__(self, model: Model, max_pixels: int) -> None:
        self.model, self.max_pixels = model, max_pixels
        self.summary = _model_summary(model.meta)
        self.lock = threading.Lock()

    def predict(self, name: str, data: bytes, cam: bool, abstain: bool = True) -> dict[str, Any]:
        model = self.model
        try:
            pixels, info = decode_image_with_info(data, name, size_hint=model.image_size, max_pixels=self.max_pixels)
        except PneumoError as exc:
            raise ApiError(400, str(exc)) from None
        image = resize_image(pixels, model.image_size)
        with self.lock:
            result = classify_images(image[None], [info], [name], model, abstain)[0]
        answer: dict[str, Any] = {
            "filename": name,
            "probability": result.probability,
            "label": result.label,
            "abstain": result.abstain,
            "abstain_reason": result.abstain_reason,
            "threshold": result.threshold,
            "class_probabilities": result.class_probabilities,
            "warnings": list(result.warnings),
            "input": info.to_dict(),
            "model": {k: self.summary[k] for k in ("id", "architecture", "pneumo_version")},
            "cam": None,
        }
        if cam and isinstance(model, OnnxModel):
            answer["warnings"].append("no heatmap: this service runs an ONNX export; Grad-CAM needs the PyTorch checkpoint")
        elif cam:
            answer["cam"] = self._heatmap(image, result.probability)
        return answer

    def _heatmap(self, image: np.ndarray, probability: float) -> dict[str, str]:
        from pneumo.explain.gradcam import grad_cam, weighted_by_probability
        from pneumo.viz.figures import cam_overlay, heatmap_rgba

        with self.lock:
            heatmap = weighted_by_probability(grad_cam(self.model, image[None]), np.array([probability]))[0]
        return {
            "image_png": _png_base64(image),
            "heatmap_png": _png_base64(heatmap_rgba(heatmap)),
            "overlay_png": _png_base64(cam_overlay(image, heatmap)),
            "scale": "Grad-CAM x P(pneumonia): as bright as the model is sure",
        }


def create_app(
    model: str | Path | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_pixels: int = DEFAULT_MAX_PIXELS
) -> FastAPI:
    """The service for one model (a run folder, checkpoint, `.onnx` export, or the bundled model when None).

    Args:
        model: what `pneumo.inference.predict.load_model` accepts.
        max_upload_mb: the largest upload accepted, enforced while the body is read.
        max_pixels: the largest image accepted, judged from its header before decoding.
    """
    service = _Service(load_model(model).with_feature_check(), max_pixels)  # once, shared by every request
    summary = service.summary
    limit = int(max_upload_mb * 2**20)
    static = Path(str(resources.files("pneumo") / "serve" / "static"))
    app = FastAPI(
        title="pneumo",
        version=__version__,
        description="Pneumonia on pediatric chest X-rays. Research and education only: not a medical device.",
    )
    _add_error_handlers(app)

    @app.post("/v1/predict")
    async def predict(request: Request, cam: bool = False, abstain: bool = True) -> dict[str, Any]:
        """P(pneumonia), the label at the model's threshold, input warnings; no label (`abstain`
        true, with the reason) for an input outside what the model was trained on, unless
        `?abstain=false`; with `?cam=true` the image the model saw, its Grad-CAM heatmap and
        their overlay as base64 PNGs."""
        body = await _read_limited(request, limit)
        name, data = _uploaded_file(request.headers.get("content-type", ""), body, limit)
        return await run_in_threadpool(service.predict, name, data, cam, abstain)

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        """The served model: architecture, classes, input size, threshold, validation metrics."""
        return summary

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model": summary["id"]}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html")

    app.mount("/static", StaticFiles(directory=static), name="static")
    return app
