"""Prediction with an exported model through onnxruntime, without PyTorch.

An export (`pneumo.deploy.onnx.export`) is a pair of files: `<name>.onnx`, whose graph
takes raw pixels (float32 [N, 1, S, S], 0..255) and returns class probabilities, and
`<name>.json` with what is needed to use it (the checkpoint's metadata, the graph's checksum).
Nothing here imports torch, directly or indirectly: a deployment needs only onnxruntime.

Everything is checked on load, so a service refuses to start rather than answer with errors:
the JSON's own checksum (`meta_sha256`, over all its fields: threshold, classes, the input
check's arrays, the graph's checksum) and its checkpoint metadata through the one validator
(`CheckpointMeta.load`); the graph's checksum; then the graph itself: one float32 input of
the declared name and shape, the two declared outputs, and one run on a blank image that
must give a probability per class.

Example:
    >>> model = OnnxModel.load("model.onnx")
    >>> model.pneumonia_probability(images)
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from pneumo.data.preprocess import check_image_batch
from pneumo.errors import PneumoError
from pneumo.inference.base import Model
from pneumo.inference.checks import FeatureCheck
from pneumo.models.meta import CheckpointMeta, check_seal
from pneumo.utils.hashing import sha256_file
from pneumo.utils.reading import read_json
from pneumo.utils.progress import progress_bar

__all__ = ["ENCODING", "EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "OnnxModel", "encode_arrays"]

ENCODING = "float32-le-base64"  # how an export's JSON carries the input check's arrays
EXPORT_FORMAT = "pneumo-onnx"
EXPORT_FORMAT_VERSION = 2  # 2: the JSON carries meta_sha256 over all its fields; 1 did not
_AGAIN = "an export must be written by `pneumo export`: export the model again"
# the checkpoint fields an export's JSON repeats at its top level, for a reader without pneumo
REPEATED = ("architecture", "task", "classes", "image_size", "threshold", "temperature")


def encode_arrays(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The export JSON's form of an input check's arrays (what `_feature_check` reads back)."""
    return {
        "encoding": ENCODING,
        "arrays": {
            k: {"shape": list(v.shape), "data": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")}
            for k, v in arrays.items()
        },
    }


_ORT_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.RuntimeException,
)


class OnnxModel(Model):
    """An exported model in an onnxruntime session, with its metadata.

    Args:
        session: a session over the exported graph.
        export: the export's JSON (see `pneumo.deploy.onnx.export`); `meta` is its checkpoint
            metadata, whose threshold, classes and size the JSON's top level repeats.
        where: what to name in a PneumoError (the JSON file).

    Raises:
        PneumoError: the JSON or the graph is not a pneumo export's, or was edited (module docstring).
    """

    def __init__(self, session: ort.InferenceSession, export: dict[str, Any], where: str = "the export's JSON") -> None:
        self.session = session
        self.export = export
        self.meta = _export_meta(export, where)
        self._feature_check = _feature_check(export, where)
        self._input, self._outputs = _check_graph(session, export, self.meta, self._feature_check, where)

    @property
    def feature_check(self) -> FeatureCheck | None:
        return self._feature_check

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Open `<name>.onnx` (or its `<name>.json`), checking the JSON, the graph's checksum and the graph (module docstring)."""
        path = Path(path).expanduser()
        onnx_path, json_path = path.with_suffix(".onnx"), path.with_suffix(".json")
        for needed in (onnx_path, json_path):
            if not needed.is_file():
                raise PneumoError(
                    f"{needed} not found: an exported model is a .onnx file with its .json beside it; make both with `pneumo export`"
                )
        export = read_json(json_path, "export the model again")
        _export_meta(export, str(json_path))  # checked before the graph is opened
        if sha256_file(onnx_path) != export["onnx_sha256"]:
            raise PneumoError(
                f"{onnx_path} does not match the checksum in {json_path.name}: the file is damaged or was replaced; export the model again"
            )
        try:
            session = ort.InferenceSession(str(onnx_path), _session_options(), providers=["CPUExecutionProvider"])
        except _ORT_ERRORS as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PneumoError(
                f"onnxruntime cannot load {onnx_path} ({first}): the file is damaged or not a pneumo export; export the model again"
            ) from None
        return cls(session, export, str(json_path))

    def class_probabilities(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """uint8 [N, S, S] images at the model's size -> probabilities [N, n_classes] in `classes` order."""
        return self._run(images, batch_size, progress, [self._outputs[0]])[0]

    def probabilities_and_scores(
        self, images: np.ndarray, batch_size: int = 256, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and, where the export carries the input check, each image's scores (one pass)."""
        if self._feature_check is None:
            return self.class_probabilities(images, batch_size, progress), None
        probs, features = self._run(images, batch_size, progress, self._outputs[:2])
        return probs, self._feature_check.scores(features)

    def class_probabilities_and_features(
        self, images: np.ndarray, batch_size: int = 256, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and each image's feature row (what the input check scores), from one pass."""
        probs, features = self._run(images, batch_size, progress, self._outputs[:2])
        return probs, features.astype(np.float64)

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


def _feature_check(export: dict[str, Any], where: str) -> FeatureCheck | None:
    """The input check an export carries (`pneumo.deploy.onnx`); None when it has none."""
    check = export.get("feature_check")
    if check is None:
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


def _export_meta(export: Any, where: str) -> CheckpointMeta:
    """The checkpoint metadata an export carries, after the export's own checks: its format, its
    checksum (`meta_sha256` over every field), the checkpoint's record through `CheckpointMeta.load`,
    and the fields it repeats at the top level and in its input/output blocks agreeing with that record."""
    if not isinstance(export, dict) or export.get("format") != EXPORT_FORMAT:
        raise PneumoError(f'{where} is not a pneumo export\'s JSON (no "format": "{EXPORT_FORMAT}"); {_AGAIN}')
    version = export.get("format_version")
    if version != EXPORT_FORMAT_VERSION or isinstance(version, bool):
        old = ", which has no metadata checksum," if version == 1 else ""
        raise PneumoError(f"{where}: export format {version!r}{old} is not supported (expected {EXPORT_FORMAT_VERSION}); {_AGAIN}")
    check_seal(export, where, _AGAIN)
    meta = CheckpointMeta.load(export.get("checkpoint"), f"{where} (its checkpoint)", remedy=_AGAIN)
    for key in REPEATED:
        if key not in export or export[key] != getattr(meta, key) or isinstance(export[key], bool):
            raise PneumoError(f"{where}: its {key} {export.get(key)!r} disagrees with its checkpoint's {getattr(meta, key)!r}; {_AGAIN}")
    sha = export.get("onnx_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise PneumoError(f"{where} has no graph checksum (onnx_sha256), so another graph could not be detected; {_AGAIN}")
    size, classes = meta.image_size, list(meta.classes)
    blocks = {
        "input": {"name": str, "dtype": "float32", "shape": ["batch", 1, size, size]},
        "output": {"name": str, "dtype": "float32", "shape": ["batch", len(classes)], "order": classes},
        "features_output": {"name": str, "dtype": "float32", "shape": ["batch", "width"]},
    }
    for block, wanted in blocks.items():
        given = export.get(block)
        for key, value in wanted.items():
            found = given.get(key) if isinstance(given, dict) else None
            fits = (isinstance(found, str) and bool(found)) if value is str else found == value
            if not fits:
                raise PneumoError(f"{where}: its {block} {key} is {found!r}, not what a {meta.task} model at {size} px has; {_AGAIN}")
    if export["input"]["name"] != "pixels" or export["output"]["name"] == export["features_output"]["name"]:
        raise PneumoError(f"{where}: its input and output names are not a pneumo export's; {_AGAIN}")
    return meta


def _check_graph(
    session: ort.InferenceSession, export: dict[str, Any], meta: CheckpointMeta, check: FeatureCheck | None, where: str
) -> tuple[str, list[str]]:
    """The graph's input name and output names, after checking them against the JSON and what this
    backend feeds and reads, and one run on a blank image; a PneumoError otherwise (at load
    time, so a service never starts with a graph that would fail every request)."""
    size, n_classes = meta.image_size, len(meta.classes)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    wanted_in, wanted_out = export["input"]["name"], [export["output"]["name"], export["features_output"]["name"]]
    problem = None
    if [i.name for i in inputs] != [wanted_in]:
        problem = f"its inputs are {[i.name for i in inputs]}, not [{wanted_in!r}]"
    elif inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4 or list(inputs[0].shape[1:]) != [1, size, size]:
        problem = f"its input is {inputs[0].type} {inputs[0].shape}, not float32 [batch, 1, {size}, {size}]"
    elif isinstance(inputs[0].shape[0], int):
        problem = f"its input takes batches of exactly {inputs[0].shape[0]} image(s), not any number"
    elif [o.name for o in outputs] != wanted_out:
        problem = f"its outputs are {[o.name for o in outputs]}, not {wanted_out}"
    elif any(o.type != "tensor(float)" or len(o.shape) != 2 for o in outputs):
        problem = f"its outputs are {[(o.type, o.shape) for o in outputs]}, not two float32 matrices"
    if problem is None:
        try:
            probs, features = session.run(wanted_out, {wanted_in: np.zeros((2, 1, size, size), dtype=np.float32)})
        except _ORT_ERRORS as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            probs = features = None
            problem = f"it fails on a blank image ({first})"
        if probs is not None:
            probs, features = np.asarray(probs), np.asarray(features)
            if probs.shape != (2, n_classes):
                problem = f"it returns probabilities of shape {list(probs.shape)} for 2 images, not [2, {n_classes}]"
            elif not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any() or not np.allclose(probs.sum(axis=1), 1, atol=1e-3):
                problem = f"its {export['output']['name']} for a blank image, {probs[0].tolist()}, are not probabilities that sum to 1"
            elif features.ndim != 2 or len(features) != 2 or (check is not None and features.shape[1] < check.width):
                problem = f"its features are {list(features.shape)} for 2 images, not [2, {check.width if check else 'width'}] the input check needs"
    if problem is not None:
        raise PneumoError(f"the graph beside {where} does not fit it: {problem}; {_AGAIN}")
    return wanted_in, wanted_out
