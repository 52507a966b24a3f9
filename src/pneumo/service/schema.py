"""The HTTP API's wire format as pydantic models, so `/openapi.json` declares what the service sends.

The prediction endpoint answers with plain JSON it builds itself (no re-encoding pass) and reads
its upload with its own streaming parser (`pneumo.service.upload`), so FastAPI cannot infer either
side: these models and `UPLOAD_BODY` state them, and tests/service/test_schema.py holds real
answers and errors to them.

Example:
    >>> PredictAnswer.model_validate(response.json())  # what a client may rely on
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ErrorBody", "Heatmap", "InputInfo", "ModelRef", "PREDICT_ERRORS", "PredictAnswer", "UPLOAD_BODY"]

# The multipart form `read_upload` accepts. `format: binary` is the older OpenAPI way to say "a file"
# and `contentMediaType` the JSON Schema way: Swagger UI and client generators each know one of them.
UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "title": "Upload",
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "title": "File",
                        "type": "string",
                        "format": "binary",
                        "contentMediaType": "application/octet-stream",
                        "description": "the X-ray: JPEG, PNG or DICOM (TIFF, BMP, WebP and GIF are read too); sniffed, not trusted by name",
                    }
                },
            }
        }
    },
}


class ErrorBody(BaseModel):
    """Every failure's body, whatever its status: a message for a person, never a traceback."""

    error: str = Field(description="what went wrong and what to do about it")


class ModelRef(BaseModel):
    """Which model gave the answer (`GET /v1/model` has the rest)."""

    id: str = Field(description="architecture and the first 12 hex digits of the weights' SHA-256")
    architecture: str
    pneumo_version: str | None = Field(description="the pneumo version that trained it; null when the checkpoint does not say")


class InputInfo(BaseModel):
    """What the upload was before it became a gray array (`pneumo.data.io.ImageInfo`), so a client
    can see why a warning was raised."""

    format: str = Field(description="the sniffed format: JPEG, PNG, DICOM, TIFF, BMP, WEBP or GIF")
    width: int = Field(description="pixels, as shown upright")
    height: int = Field(description="pixels, as shown upright")
    mode: str = Field(description="PIL's mode, or the DICOM PhotometricInterpretation")
    colourfulness: float = Field(description="mean absolute difference between colour channels (0-255): about 0 for a radiograph")
    frames: int
    modality: str | None = Field(description="DICOM Modality")
    body_part: str | None = Field(description="DICOM BodyPartExamined")
    view_position: str | None = Field(description="DICOM ViewPosition")
    patient_age_years: float | None = Field(description="DICOM PatientAge, in years")
    transparent: float = Field(description="share of the picture at least half transparent")


class Heatmap(BaseModel):
    """The picture the model saw and where it looked, each a base64 PNG at the model's input size."""

    image_png: str = Field(description="the image as the model saw it (gray)")
    heatmap_png: str = Field(description="Grad-CAM x P(pneumonia), RGBA")
    overlay_png: str = Field(description="the heatmap over the image (RGB)")
    scale: str = Field(description="what the heatmap's brightness means")


class PredictAnswer(BaseModel):
    """One film's verdict. When the input checks find the film outside what the model was trained on,
    the model abstains: `label` is null and `abstain_reason` says why (unless `?abstain=false`)."""

    filename: str = Field(description="the upload's file name, path parts dropped ('upload' when it had none)")
    probability: float = Field(description="P(pneumonia)")
    label: str | None = Field(description="the class at the model's threshold; null when the model abstains")
    abstain: bool
    abstain_reason: str | None = Field(description="the first warning, when the model abstains")
    threshold: float = Field(description="the probability from which the label is PNEUMONIA")
    class_probabilities: dict[str, float] = Field(description="every class's probability, by class name")
    warnings: list[str] = Field(description="why the input may be outside what the model can judge; empty for a usual film")
    input: InputInfo
    model: ModelRef
    cam: Heatmap | None = Field(description="with `?cam=true` on a service that can draw heatmaps; otherwise null")


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# the statuses `POST /v1/predict` answers besides 200 (a client gone mid-upload gets none)
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("the image cannot be read or is too large in pixels, or the multipart body is malformed or a flood"),
    408: _error("the upload arrived too slowly"),
    413: _error("the upload is larger than the size limit"),
    415: _error("the body is not multipart/form-data"),
    422: _error("no form field named 'file', a query parameter that is not a boolean, or a film the model cannot classify"),
    500: _error("a bug in the service; the server log has the details"),
    503: _error("the service is busy; try again shortly"),
}
