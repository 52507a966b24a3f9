"""The OpenAPI document against real answers: what `/openapi.json` declares is what the service sends."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from pneumo.inference.base import Prediction
from pneumo.service.app import create_app
from pneumo.service.schema import ErrorBody, PredictAnswer
from tests.conftest import SAMPLES, TRAIN


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict:
    return client.get("/openapi.json").json()


def _post(client: TestClient, name: str, data: bytes, **params: object):
    return client.post("/v1/predict", params=params, files={"file": (name, data, "application/octet-stream")})


def _check(document: dict, status: int, body: dict, model: type[BaseModel]) -> None:
    """`body` fits the schema `/v1/predict` declares for `status`, with no field it leaves out, and
    the pydantic model behind it."""
    response = document["paths"]["/v1/predict"]["post"]["responses"][str(status)]
    components = copy.deepcopy(document["components"])
    for schema in components["schemas"].values():  # strict here: a field the schema does not name is drift
        schema["additionalProperties"] = False
    schema = {**response["content"]["application/json"]["schema"], "components": components}
    jsonschema.Draft202012Validator(schema).validate(body)
    model.model_validate(body, extra="forbid")


def test_the_document_declares_the_upload_and_the_answers(document: dict) -> None:
    operation = document["paths"]["/v1/predict"]["post"]
    body = operation["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert body["required"] is True and form["required"] == ["file"]
    assert form["properties"]["file"]["type"] == "string" and form["properties"]["file"]["format"] == "binary"
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/PredictAnswer"}
    properties = document["components"]["schemas"]["PredictAnswer"]["properties"]
    assert {"probability", "label", "abstain", "abstain_reason", "warnings", "input", "cam"} <= set(properties)
    for status in ("400", "413", "415", "422", "503"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in document["components"]["schemas"]  # the service's 422 is {"error": ...} too


def test_the_declared_answer_is_a_serialised_prediction_with_path_called_filename() -> None:
    fields = Prediction("a.jpeg", 0.5, "PNEUMONIA", 0.5, {"NORMAL": 0.5, "PNEUMONIA": 0.5}).to_dict()
    assert set(PredictAnswer.model_fields) == {"filename", *fields, "input", "model", "cam"} - {"path"}


def test_real_answers_fit_the_declared_models(client: TestClient, document: dict, shared_data: Path) -> None:
    film = sorted((TRAIN / "PNEUMONIA").glob("*.jpeg"))[0]
    dicom = (SAMPLES / "dicom" / "not_a_chest_ot.dcm").read_bytes()
    plain = _post(client, film.name, film.read_bytes())
    heatmap = _post(client, film.name, film.read_bytes(), cam="true")
    abstains = _post(client, "scan.dcm", dicom)
    forced = _post(client, "scan.dcm", dicom, abstain="false")
    assert [r.status_code for r in (plain, heatmap, abstains, forced)] == [200] * 4
    assert heatmap.json()["cam"] is not None and abstains.json()["abstain"] and abstains.json()["warnings"]
    for response in (plain, heatmap, abstains, forced):
        _check(document, 200, response.json(), PredictAnswer)


def test_real_errors_fit_the_declared_models(client: TestClient, document: dict, shared_data: Path) -> None:
    film = sorted((TRAIN / "NORMAL").glob("*.jpeg"))[0].read_bytes()
    errors = [
        _post(client, "notes.jpeg", b"these are not pixels"),
        client.post("/v1/predict", content=film, headers={"content-type": "image/jpeg"}),
        client.post("/v1/predict", files={"image": ("x.jpeg", film)}),
        _post(client, "x.jpeg", film, cam="maybe"),
    ]
    assert [e.status_code for e in errors] == [400, 415, 422, 422]
    for response in errors:
        _check(document, response.status_code, response.json(), ErrorBody)
