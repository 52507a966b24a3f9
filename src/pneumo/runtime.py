"""Prediction with an exported model through onnxruntime, without PyTorch.

An export (`pneumo.export.export_onnx`) is a pair of files: `<name>.onnx`, whose graph takes
raw pixels (float32 [N, 1, S, S], 0..255) and returns class probabilities, and `<name>.json`
with what is needed to use it (classes, image size, threshold, checksum). Images go through
the same `pneumo.preprocess` path as training, so both backends see identical pixels.
Nothing here imports torch, directly or indirectly: a deployment needs only onnxruntime.

Example:
    >>> model = OnnxModel.load("model.onnx")
    >>> [p.label for p in predict_files(["xray.jpeg"], "model.onnx")]
    ['PNEUMONIA']
"""
from __future__ import annotations

import os
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from pneumo.data.layout import image_files
from pneumo.errors import PneumoError
from pneumo.data.io import ImageInfo
from pneumo.input_checks import check_inputs
from pneumo.preprocess import load_image_with_info

__all__ = ["Prediction", "PredictionBatch", "ModelMetadata", "OnnxModel", "Classifier", "expand_paths", "classify", "classify_images", "predict_files"]

_ORT_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.NoSuchFile, ort_errors.RuntimeException)


@dataclass(frozen=True)
class Prediction:
    """One image's verdict: P(pneumonia), the label at the threshold, and every class's probability."""

    path: str
    probability: float
    label: str
    threshold: float
    class_probabilities: dict[str, float]
    warnings: tuple[str, ...] = ()  # why the input may be outside what the model can judge (pneumo.input_checks)

    def to_dict(self) -> dict:
        return {**asdict(self), "warnings": list(self.warnings)}


class Classifier(Protocol):
    """What `classify` needs of a model; `OnnxModel` and `pneumo.checkpoint.LoadedModel` both have it.

    A model that also has `probabilities_and_distances(images)` and `distance_limit`
    (`pneumo.feature_stats.FeatureCheckedModel`) gets the feature-distance check as well.
    """

    meta: dict[str, Any]

    @property
    def image_size(self) -> int: ...

    @property
    def threshold(self) -> float: ...

    def class_probabilities(self, images: np.ndarray, batch_size: int = ...) -> np.ndarray: ...


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ModelMetadata:
    """What every backend's model reads off its metadata, and P(pneumonia) from its class probabilities."""

    meta: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    def class_probabilities(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        raise NotImplementedError

    def pneumonia_probability(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """P(pneumonia) for every image: 1 - P(normal), for binary and pathogen models alike."""
        return 1.0 - self.class_probabilities(images, batch_size)[:, 0]


class OnnxModel(ModelMetadata):
    """An exported model in an onnxruntime session, with its metadata.

    Args:
        session: a session over the exported graph.
        meta: the export's JSON (see `pneumo.export.export_onnx`).
    """

    def __init__(self, session: ort.InferenceSession, meta: dict[str, Any]) -> None:
        self.session = session
        self.meta = meta
        self._input = session.get_inputs()[0].name

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Open `<name>.onnx` (or its `<name>.json`), checking the graph against the JSON's checksum."""
        path = Path(path).expanduser()
        onnx_path, json_path = path.with_suffix(".onnx"), path.with_suffix(".json")
        for needed in (onnx_path, json_path):
            if not needed.is_file():
                raise PneumoError(f"{needed} not found: an exported model is a .onnx file with its .json beside it; make both with `pneumo export`")
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            raise PneumoError(f"{json_path} is not readable JSON ({exc}); export the model again") from None
        missing = [k for k in ("classes", "image_size", "threshold", "task") if k not in meta]
        if missing:
            raise PneumoError(f"{json_path} lacks {', '.join(missing)}; export the model again with `pneumo export`")
        if meta.get("onnx_sha256") and _sha256(onnx_path) != meta["onnx_sha256"]:
            raise PneumoError(f"{onnx_path} does not match the checksum in {json_path.name}: the file is damaged or was replaced; export the model again")
        try:
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        except _ORT_ERRORS as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PneumoError(f"onnxruntime cannot load {onnx_path} ({first}): the file is damaged or not a pneumo export; export the model again") from None
        return cls(session, meta)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def class_probabilities(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 [N, S, S] images at the model's size -> probabilities [N, n_classes] in `classes` order."""
        images = np.asarray(images)
        size = self.image_size
        if images.ndim != 3 or images.shape[1:] != (size, size) or images.dtype != np.uint8:
            raise PneumoError(f"the model needs uint8 images [N, {size}, {size}]; got {images.dtype} {list(images.shape)}: load them with pneumo.preprocess.load_image(path, {size})")
        out = [
            self.session.run(None, {self._input: images[start : start + batch_size, None].astype(np.float32)})[0]
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)


def _glob(pattern: Path) -> list[Path]:
    """Matches of a pattern (`scans/**/*.dcm`), each file once: pathlib's `**` does not follow
    symlinked folders, so a link to a parent cannot list the archive again (or forever)."""
    parts = pattern.parts
    first = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
    anchor = Path(*parts[:first]) if first else Path(".")
    seen: set[str] = set()
    matches = []
    for match in sorted(anchor.glob(str(Path(*parts[first:])))):
        real = os.path.realpath(match)
        if real not in seen:
            seen.add(real)
            matches.append(match)
    return matches


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, image files found recursively in folders (as a dataset's are: junk and
    symlink loops left out), and glob patterns (`scans/**/*.jpeg`) expanded, for when the shell
    did not (quoted, or on Windows)."""
    files: list[Path] = []
    given = [Path(p) for p in paths]
    for p in given:
        if not os.path.lexists(p) and any(c in str(p) for c in "*?["):
            matches = _glob(p)
            if not matches:
                raise PneumoError(f"no file matches {p}")
            files += expand_paths(matches)
        elif p.is_dir():
            found = image_files(p)
            if not found:
                raise PneumoError(f"{p} holds no .jpeg/.jpg/.png/.dcm images")
            files += found
        elif os.path.lexists(p):
            files.append(p)  # a file, or a link that does not resolve: reading it says why
        else:
            raise PneumoError(f"{p} does not exist")
    if not files:
        raise PneumoError(f"no image files found in {', '.join(map(str, given)) or 'the given paths'}")
    return files


class PredictionBatch(list):
    """The predictions for a batch of files (a list of `Prediction`), and the files skipped because
    they could not be read, each with the reason: `skipped = [(path, message), ...]`."""

    def __init__(self, predictions: Iterable[Prediction] = (), skipped: list[tuple[str, str]] | None = None) -> None:
        super().__init__(predictions)
        self.skipped: list[tuple[str, str]] = skipped or []


def classify(files: list[Path], model: Classifier, batch_size: int = 32, strict: bool = False) -> PredictionBatch:
    """Predictions for image files with any backend: P(pneumonia) = 1 - P(normal), labelled at the
    model's threshold, with the input checks' warnings.

    A file that cannot be read is skipped and listed in `.skipped` (one bad file in an archive
    does not stop the batch); with `strict` it is an error. So is a batch with no readable file.
    """
    results = PredictionBatch()
    for start in range(0, len(files), batch_size):
        decoded, names = [], []
        for f in files[start : start + batch_size]:
            try:
                decoded.append(load_image_with_info(f, model.image_size))
                names.append(str(f))
            except PneumoError as exc:
                if strict:
                    raise PneumoError(f"{exc} (--strict stops at the first unreadable file)") from None
                results.skipped.append((str(f), str(exc)))
        if decoded:
            results += classify_images(np.stack([image for image, _ in decoded]), [info for _, info in decoded], names, model)
    if not results and results.skipped:
        first = "; ".join(message for _, message in results.skipped[:3])
        raise PneumoError(f"none of the {len(results.skipped)} files could be read: {first}")
    return results


def classify_images(images: np.ndarray, infos: Sequence[ImageInfo | None], names: Sequence[str], model: Classifier) -> list[Prediction]:
    """`classify` for images already decoded and resized (uint8 [N, S, S]), e.g. uploads a service
    received: one forward pass, labels at the model's threshold, the input checks' warnings."""
    if hasattr(model, "probabilities_and_distances"):
        probs, distances = model.probabilities_and_distances(images)
        warnings = check_inputs(infos, distances, model.distance_limit)
    else:
        probs, warnings = model.class_probabilities(images), check_inputs(infos)
    classes = model.meta["classes"]
    results = []
    for name, row, warned in zip(names, probs, warnings):
        p = float(1 - row[0])
        results.append(
            Prediction(
                path=name,
                probability=p,
                label="PNEUMONIA" if p >= model.threshold else "NORMAL",
                threshold=model.threshold,
                class_probabilities={c: float(v) for c, v in zip(classes, row)},
                warnings=tuple(warned),
            )
        )
    return results


def predict_files(paths: Iterable[str | Path], model_path: str | Path | OnnxModel, batch_size: int = 32, strict: bool = False) -> PredictionBatch:
    """Classify image files (or folders of them) with an exported model, as `pneumo.prediction.predict` does with a checkpoint.

    Example:
        >>> [p.label for p in predict_files(["xray.jpeg"], "model.onnx")]
        ['PNEUMONIA']
    """
    model = model_path if isinstance(model_path, OnnxModel) else OnnxModel.load(model_path)
    return classify(expand_paths(paths), model, batch_size, strict)
