"""Prediction with an exported model through onnxruntime, without PyTorch.

An export (`pneumo.export.onnx.export_onnx`) is a pair of files: `<name>.onnx`, whose graph
takes raw pixels (float32 [N, 1, S, S], 0..255) and returns class probabilities, and
`<name>.json` with what is needed to use it (the checkpoint's metadata, the graph's checksum).
Nothing here imports torch, directly or indirectly: a deployment needs only onnxruntime.

Example:
    >>> model = OnnxModel.load("model.onnx")
    >>> model.pneumonia_probability(images)
"""
from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from pneumo.data.preprocess import check_image_batch
from pneumo.errors import PneumoError
from pneumo.inference.base import Model
from pneumo.inference.checks import FeatureCheck
from pneumo.models.meta import CheckpointMeta
from pneumo.utils.files import sha256_file
from pneumo.utils.progress import progress_bar

__all__ = ["ENCODING", "OnnxModel", "encode_arrays"]

ENCODING = "float32-le-base64"  # how an export's JSON carries the input check's arrays


def encode_arrays(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The export JSON's form of an input check's arrays (what `_feature_check` reads back)."""
    return {
        "encoding": ENCODING,
        "arrays": {k: {"shape": list(v.shape), "data": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")} for k, v in arrays.items()},
    }

_ORT_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.NoSuchFile, ort_errors.RuntimeException)


class OnnxModel(Model):
    """An exported model in an onnxruntime session, with its metadata.

    Args:
        session: a session over the exported graph.
        export: the export's JSON (see `pneumo.export.onnx.export_onnx`); `meta` is its checkpoint
            metadata with the export's own threshold.
    """

    def __init__(self, session: ort.InferenceSession, export: dict[str, Any]) -> None:
        self.session = session
        self.export = export
        self.meta = _export_meta(export, "the export's JSON")
        self._input = session.get_inputs()[0].name
        self._outputs = [o.name for o in session.get_outputs()]
        self._feature_check = _feature_check(export, self._outputs, "the export's JSON")

    @property
    def feature_check(self) -> FeatureCheck | None:
        return self._feature_check

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Open `<name>.onnx` (or its `<name>.json`), checking the graph against the JSON's checksum."""
        path = Path(path).expanduser()
        onnx_path, json_path = path.with_suffix(".onnx"), path.with_suffix(".json")
        for needed in (onnx_path, json_path):
            if not needed.is_file():
                raise PneumoError(f"{needed} not found: an exported model is a .onnx file with its .json beside it; make both with `pneumo export`")
        try:
            export = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            raise PneumoError(f"{json_path} is not readable JSON ({exc}); export the model again") from None
        missing = [k for k in ("classes", "image_size", "threshold", "task") if not isinstance(export, dict) or k not in export]
        if missing:
            raise PneumoError(f"{json_path} lacks {', '.join(missing)}; export the model again with `pneumo export`")
        _export_meta(export, str(json_path))  # checked before the graph is opened
        if export.get("onnx_sha256") and sha256_file(onnx_path) != export["onnx_sha256"]:
            raise PneumoError(f"{onnx_path} does not match the checksum in {json_path.name}: the file is damaged or was replaced; export the model again")
        try:
            session = ort.InferenceSession(str(onnx_path), _session_options(), providers=["CPUExecutionProvider"])
        except _ORT_ERRORS as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PneumoError(f"onnxruntime cannot load {onnx_path} ({first}): the file is damaged or not a pneumo export; export the model again") from None
        return cls(session, export)

    def class_probabilities(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """uint8 [N, S, S] images at the model's size -> probabilities [N, n_classes] in `classes` order."""
        return self._run(images, batch_size, progress, [self._outputs[0]])[0]

    def probabilities_and_scores(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and, where the export carries the input check, each image's scores (one pass)."""
        if self._feature_check is None:
            return self.class_probabilities(images, batch_size, progress), None
        probs, features = self._run(images, batch_size, progress, self._outputs[:2])
        return probs, self._feature_check.scores(features)

    def _run(self, images: np.ndarray, batch_size: int, progress: bool, outputs: list[str]) -> list[np.ndarray]:
        images = check_image_batch(images, self.image_size)
        starts = range(0, len(images), batch_size)
        batches = [
            self.session.run(outputs, {self._input: images[start : start + batch_size, None].astype(np.float32)})
            for start in progress_bar(starts, len(starts), "predicting", progress)
        ]
        if not batches:
            return [np.zeros((0, len(self.classes)), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)][: len(outputs)]
        return [np.concatenate([b[i] for b in batches]) for i in range(len(outputs))]


def _session_options() -> ort.SessionOptions:
    """Worker threads that sleep between runs instead of spinning: a service decoding and parsing
    uploads beside inference needs those cores (benchmarks/bench_serve.py)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _feature_check(export: dict[str, Any], outputs: list[str], where: str) -> FeatureCheck | None:
    """The input check an export carries (`pneumo.export.onnx`), when its graph also outputs the features."""
    check = export.get("feature_check")
    if not check or len(outputs) < 2:
        return None
    try:
        if check.get("encoding") != ENCODING:
            raise ValueError(f"encoding {check.get('encoding')!r}, not {ENCODING}")
        arrays = {
            name: np.frombuffer(base64.b64decode(entry["data"], validate=True), dtype="<f4").reshape(entry["shape"])
            for name, entry in check["arrays"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise PneumoError(f"{where}: its feature_check is damaged ({exc}); export the model again") from None
    return FeatureCheck.from_arrays(arrays, where)


def _export_meta(export: dict[str, Any], where: str) -> CheckpointMeta:
    """The checkpoint metadata an export carries, with the export's threshold, classes, task and size on top."""
    checkpoint = export.get("checkpoint")
    base = dict(checkpoint) if isinstance(checkpoint, dict) else {}
    base.setdefault("architecture", export.get("architecture", "onnx"))
    base.setdefault("mean", 0.0)  # normalisation is inside the graph
    base.setdefault("std", 1.0)
    base |= {k: export[k] for k in ("task", "classes", "image_size", "threshold") if k in export}
    if "num_outputs" not in base and isinstance(base.get("classes"), list):
        base["num_outputs"] = 1 if len(base["classes"]) == 2 else len(base["classes"])
    return CheckpointMeta.from_dict(base, where)
