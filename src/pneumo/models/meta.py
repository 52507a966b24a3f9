"""A checkpoint's metadata as a typed record: how to rebuild and feed the network, where its
decision threshold lies, and how it came to be. Torch-free, so the ONNX runtime reads it too.

On disk it is `meta.json` beside `weights.safetensors` (and, in an ONNX export's JSON, under
`"checkpoint"`). Every reader goes through one validator, `CheckpointMeta.load`: the record
must carry its checksum (`meta_sha256`, over every other field, the weights' checksum
included), and every field must have its type, a sane value and agree with the others (task,
classes and outputs; an ensemble's members). A record is written only as `CheckpointMeta.record()`,
which validates it and computes the checksum, so the library's writers (train, calibrate,
ensemble, export) keep working while a hand edit is refused.

Example:
    >>> meta = CheckpointMeta.load(json.loads(Path("model/meta.json").read_text()), "model/meta.json")
    >>> Path("copy/meta.json").write_text(json.dumps(meta.replace(threshold=0.4).record(), indent=2))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import PneumoError, short
from pneumo.tasks import TASKS, Task, get_task

__all__ = [
    "FORMAT_VERSION",
    "WEIGHTS",
    "META",
    "FEATURES",
    "CHECKSUM",
    "IMAGE_SIZES",
    "CheckpointMeta",
    "metadata_sha256",
    "seal",
    "check_seal",
    "jsonable",
]

FORMAT_VERSION = 2  # 2: the record carries meta_sha256; 1 had only the weights' checksum
WEIGHTS, META = "weights.safetensors", "meta.json"
FEATURES = "features.safetensors"  # optional: training-feature statistics (pneumo.inference.features)
CHECKSUM = "meta_sha256"  # the field holding the checksum of all the others
IMAGE_SIZES = (16, 4096)  # the input sides a checkpoint may declare
WRITTEN_BY_PNEUMO = "a model folder must be written by pneumo (pneumo train, pneumo calibrate, pneumo ensemble, or write_meta in Python)"
_ENSEMBLE = "ensemble"  # pneumo.models.ensemble.ENSEMBLE (that module needs torch)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CROPS = ("none", "content")  # pneumo.models.framing.CROPS (that module needs torch)


def jsonable(value: Any) -> Any:
    """`json.dumps(default=...)` for what metadata may hold besides plain JSON: numpy scalars and arrays, paths."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def metadata_sha256(values: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of every field but `meta_sha256`."""
    body = {k: v for k, v in values.items() if k != CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=jsonable)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(values: dict[str, Any]) -> dict[str, Any]:
    """`values` as JSON reads them back (numpy and paths made plain), with `meta_sha256` set: what a writer writes."""
    plain = json.loads(json.dumps({k: v for k, v in values.items() if k != CHECKSUM}, default=jsonable))
    return {**plain, CHECKSUM: metadata_sha256(plain)}


def check_seal(values: dict[str, Any], where: str, remedy: str = WRITTEN_BY_PNEUMO) -> None:
    """A PneumoError naming `where` unless `values` carry a `meta_sha256` that matches them."""
    stored = values.get(CHECKSUM)
    if stored is None or stored == "":
        raise PneumoError(f"{where} has no metadata checksum ({CHECKSUM}), so an edit to it could not be detected; {remedy}")
    if not isinstance(stored, str) or not _SHA256.fullmatch(stored):
        raise PneumoError(f"{where}: its {CHECKSUM} {stored!r} is not a sha256 checksum; the file was edited or damaged; {remedy}")
    if metadata_sha256(values) != stored:
        raise PneumoError(f"{where} was edited or damaged: its fields no longer match their checksum ({CHECKSUM}); {remedy}")


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything a checkpoint says about its network.

    The first block is needed to use the model; the rest records provenance (the run's config,
    data fingerprint, validation metrics, versions) and is empty for a model built by hand.
    """

    architecture: str
    task: str
    classes: list[str]
    num_outputs: int
    image_size: int
    mean: float
    std: float
    threshold: float
    temperature: float = 1.0  # logits are divided by it before the softmax/sigmoid (calibration)
    # added to the log-odds of pneumonia after the temperature (`pneumo calibrate`: a site's shift and prevalence)
    logit_offset: float = 0.0
    in_chans: int = 1
    dropout: float = 0.0
    crop: str = "none"  # "content": the network crops its input to the content box (pneumo.models.framing)
    threshold_method: str = ""
    epoch: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    data_source: str = ""
    data_fingerprint: str = ""
    n_train: int = 0
    n_val: int = 0
    val_metrics: dict[str, Any] = field(default_factory=dict)
    val_ci95: dict[str, Any] = field(default_factory=dict)
    pneumo_version: str = ""
    torch_version: str = ""
    created: str = ""
    members: list[dict[str, Any]] = field(default_factory=list)  # an ensemble's members (pneumo.models.ensemble)
    site_calibration: dict[str, Any] = field(default_factory=dict)  # set by `pneumo calibrate`: the site data and new operating point
    # the validation evidence behind the operating point, the prior `pneumo calibrate` shrinks a site's films towards
    # (`pneumo.evaluation.calibration.CalibrationPrior`); empty for a model calibrated without it
    calibration_prior: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""  # set when the checkpoint is written
    features_sha256: str = ""  # the input check's arrays (features.safetensors) when the metadata was written beside them
    format_version: int = FORMAT_VERSION
    meta_sha256: str = ""  # of every other field (`metadata_sha256`), set by `record()`

    @property
    def task_spec(self) -> Task:
        return get_task(self.task)

    def replace(self, **changes: Any) -> CheckpointMeta:
        """A copy with some fields changed (e.g. the epoch, the chosen threshold)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, in field order."""
        return dataclasses.asdict(self)

    def record(self, where: str = "the metadata to write", architectures: Collection[str] | None = None) -> dict[str, Any]:
        """The validated record with its checksum (`meta_sha256`), as written to disk: what `load` accepts."""
        typed = CheckpointMeta.from_dict(
            self.replace(format_version=FORMAT_VERSION).to_dict(), where, architectures
        )  # 1 -> 1.0, numpy -> plain
        return seal(typed.to_dict())

    @classmethod
    def load(cls, values: Any, where: str, architectures: Collection[str] | None = None, remedy: str = WRITTEN_BY_PNEUMO) -> CheckpointMeta:
        """The one validator every reader uses (a model folder's meta.json, an export's `checkpoint`,
        an ensemble's, a calibrated copy's): format version, checksum, then every field (`from_dict`).

        Args:
            values: the record as JSON gives it.
            where: what to name in a PneumoError (the file).
            architectures: the names a network may have (the model registry and "ensemble"); None
                skips that check (the ONNX runtime, which needs no registry).
            remedy: what a user should do when the record was edited.
        """
        if not isinstance(values, dict):
            raise PneumoError(f"{where} is not a JSON object; {remedy}")
        version = values.get("format_version")
        if version == 1:
            raise PneumoError(
                f"{where} is in checkpoint format 1, which has no metadata checksum, so an edit to it could not be detected: "
                "if the folder is yours and unedited, re-save it once with `pneumo models upgrade FOLDER` "
                "(which checks its weights and every field), or train it again"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
            newer = (
                " (written by a newer pneumo: upgrade pneumo)"
                if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
                else ""
            )
            raise PneumoError(f"{where}: checkpoint format {version!r} is not supported (expected {FORMAT_VERSION}){newer}")
        check_seal(values, where, remedy)
        meta = cls.from_dict(values, where, architectures)
        if not meta.weights_sha256:
            raise PneumoError(f"{where} has no weights checksum (weights_sha256), so other weights could not be detected; {remedy}")
        return meta

    @classmethod
    def from_dict(cls, values: Any, where: str = "the metadata", architectures: Collection[str] | None = None) -> CheckpointMeta:
        """Metadata from a dict of its fields, each checked for its type and value (`validate`); a
        PneumoError names `where` and the field. The checksum is `load`'s business."""
        if not isinstance(values, dict):
            raise PneumoError(f"{where} is not a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [name for name in values if name not in fields]
        if unknown:
            raise PneumoError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; it was not written by this pneumo")
        required = [name for name, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise PneumoError(f"{where} lacks {', '.join(missing)}")
        return cls(**{name: _typed(name, value, where) for name, value in values.items()}).validate(where, architectures)

    def validate(self, where: str = "the metadata", architectures: Collection[str] | None = None) -> CheckpointMeta:
        """This metadata, or a PneumoError naming `where` and the first field whose value is
        out of range or disagrees with the others. Returns self, for chaining."""
        for name in _INT_FIELDS | _FLOAT_FIELDS | _STR_FIELDS | _DICT_FIELDS | {"epoch", "members", "classes"}:
            _typed(name, getattr(self, name), where)  # in-memory metadata (built by hand) meets the same types
        bad = _field_problem(self, architectures)
        if bad:
            raise PneumoError(f"{where}: {bad}")
        return self


_INT_FIELDS = {"num_outputs", "image_size", "in_chans", "n_train", "n_val", "format_version"}
_FLOAT_FIELDS = {"mean", "std", "threshold", "dropout", "temperature", "logit_offset"}
_STR_FIELDS = {
    "architecture",
    "task",
    "crop",
    "threshold_method",
    "data_source",
    "data_fingerprint",
    "pneumo_version",
    "torch_version",
    "created",
    "weights_sha256",
    "features_sha256",
    "meta_sha256",
}
_DICT_FIELDS = {"config", "val_metrics", "val_ci95", "site_calibration", "calibration_prior"}
_MEMBER_FIELDS = {
    "architecture": str,
    "num_outputs": int,
    "mean": float,
    "std": float,
    "temperature": float,
    "dropout": float,
    "crop": str,
    "source": str,
    "weights_sha256": str,
}
_MEMBER_REQUIRED = ("architecture", "num_outputs", "mean", "std")


def _finite(value: float | int) -> bool:
    """math.isfinite, false for an integer too large for a float (10**400) instead of raising."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _typed(name: str, value: Any, where: str) -> Any:
    """`value` as field `name`'s type, or a PneumoError: JSON's numbers are loose (1 for 1.0), its booleans are not numbers."""
    wrong = PneumoError(f"{where}: {name} is {short(value)}, which is not a valid {name}")
    if isinstance(value, (bool, np.bool_)) and name not in _DICT_FIELDS:
        raise wrong
    if name in _INT_FIELDS:
        if not isinstance(value, (int, np.integer)):
            raise wrong
        return int(value)
    if name == "epoch":
        if value is not None and not isinstance(value, (int, np.integer)):
            raise wrong
        return None if value is None else int(value)
    if name in _FLOAT_FIELDS:
        if not isinstance(value, (int, float, np.integer, np.floating)) or not _finite(value):
            raise wrong
        return float(value)
    if name in _STR_FIELDS:
        if not isinstance(value, str):
            raise wrong
        return value
    if name in _DICT_FIELDS:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise wrong
        return value
    if name == "members":
        if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
            raise wrong
        return value
    if name == "classes":
        if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
            raise wrong
        return list(value)
    return value


def _field_problem(meta: CheckpointMeta, architectures: Collection[str] | None) -> str | None:
    """What is wrong with a typed record's values, in words, or None."""
    if meta.task not in TASKS:
        return f"task {meta.task!r} is not {' or '.join(TASKS)}"
    task = TASKS[meta.task]
    if list(meta.classes) != list(task.classes):
        return f"classes {meta.classes} do not fit the {meta.task} task (which has {list(task.classes)})"
    if meta.num_outputs != task.num_outputs:
        return f"num_outputs {meta.num_outputs} does not fit the {meta.task} task (which has {task.num_outputs})"
    if not meta.architecture:
        return "architecture is empty"
    if architectures is not None and meta.architecture not in architectures:
        return f"unknown model {meta.architecture!r}; available: {', '.join(sorted(architectures))}"
    if not IMAGE_SIZES[0] <= meta.image_size <= IMAGE_SIZES[1]:
        return f"image_size {meta.image_size} is outside {IMAGE_SIZES[0]}..{IMAGE_SIZES[1]} pixels"
    if meta.in_chans != 1:
        return f"in_chans {meta.in_chans} is not 1 (pneumo's models read single-channel films)"
    if not meta.std > 0:
        return f"std {meta.std} is not positive (images are divided by it)"
    if not 0.0 <= meta.threshold <= 1.0:
        return f"threshold {meta.threshold} is not a probability in [0, 1]"
    if not meta.temperature > 0:
        return f"temperature {meta.temperature} is not positive (logits are divided by it)"
    if not 0.0 <= meta.dropout < 1.0:
        return f"dropout {meta.dropout} is not in [0, 1)"
    if meta.crop not in _CROPS:
        return f"crop {meta.crop!r} is not one of {', '.join(_CROPS)}"
    if abs(meta.logit_offset) > _MAX_LOGIT_OFFSET:
        return f"logit_offset {meta.logit_offset} is outside +-{_MAX_LOGIT_OFFSET} (it would make every answer 0 or 1)"
    prior = _prior_problem(meta.calibration_prior)
    if prior:
        return f"calibration_prior: {prior}"
    if meta.epoch is not None and meta.epoch < 0:
        return f"epoch {meta.epoch} is negative"
    if meta.n_train < 0 or meta.n_val < 0:
        return f"n_train {meta.n_train} and n_val {meta.n_val} must not be negative"
    for name in ("weights_sha256", "features_sha256", "meta_sha256"):
        value = getattr(meta, name)
        if value and not _SHA256.fullmatch(value):
            return f"{name} {value!r} is not a sha256 checksum (64 lowercase hex digits)"
    if meta.architecture == _ENSEMBLE:
        if not meta.members:
            return "an ensemble lists no members"
        if (meta.mean, meta.std) != (0.0, 1.0):
            return f"an ensemble takes images in [0, 1] (mean 0, std 1), not mean {meta.mean}, std {meta.std}: its members normalise"
        for index, member in enumerate(meta.members):
            bad = _member_problem(member, task, architectures)
            if bad:
                return f"ensemble member {index + 1}: {bad}"
    elif meta.members:
        return f"a {meta.architecture} model lists ensemble members"
    return None


_MAX_LOGIT_OFFSET = 50.0
# calibration_prior's fields (`pneumo.evaluation.calibration.CalibrationPrior`) and the range each must lie in
_PRIOR_FIELDS = {
    "threshold": (0.0, 1.0),
    "temperature": (1e-3, 1e3),
    "slope": (1e-3, 1e3),
    "offset": (-50.0, 50.0),
    "slope_sd": (1e-6, 1e3),
    "offset_sd": (1e-6, 1e3),
    "prevalence": (1e-6, 1 - 1e-6),
    "n_films": (0, 1e9),
    "n_sites": (0, 1e6),
}


def _prior_problem(prior: dict[str, Any]) -> str | None:
    """What is wrong with a calibration prior (empty is fine: a model without one), or None."""
    if not prior:
        return None
    unknown, missing = sorted(set(prior) - set(_PRIOR_FIELDS)), sorted(set(_PRIOR_FIELDS) - set(prior))
    if unknown or missing:
        return f"unknown field(s) {unknown}" if unknown else f"lacks {', '.join(missing)}"
    for key, (low, high) in _PRIOR_FIELDS.items():
        value = prior[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) or not low <= value <= high:
            return f"{key} is {short(value)}, not a number in [{low:g}, {high:g}]"
    return None


def _member_problem(member: dict[str, Any], task: Task, architectures: Collection[str] | None) -> str | None:
    """What is wrong with an ensemble member's description (`pneumo.models.ensemble.EnsembleMember`), or None."""
    unknown = [k for k in member if k not in _MEMBER_FIELDS]
    missing = [k for k in _MEMBER_REQUIRED if k not in member]
    if unknown or missing:
        return f"unknown field(s) {unknown}" if unknown else f"lacks {', '.join(missing)}"
    for key, kind in _MEMBER_FIELDS.items():
        if key not in member:
            continue
        value = member[key]
        if isinstance(value, bool) or (kind is str and not isinstance(value, str)) or (kind is int and not isinstance(value, int)):
            return f"{key} is {short(value)}, which is not a valid {key}"
        if kind is float and (not isinstance(value, (int, float)) or not _finite(value)):
            return f"{key} is {short(value)}, which is not a valid {key}"
    if member["architecture"] == _ENSEMBLE or (architectures is not None and member["architecture"] not in architectures):
        return f"unknown model {member['architecture']!r} for a member"
    if member["num_outputs"] != task.num_outputs:
        return f"num_outputs {member['num_outputs']} does not fit the {task.name} task (which has {task.num_outputs})"
    if not member["std"] > 0:
        return f"std {member['std']} is not positive"
    if not member.get("temperature", 1.0) > 0:
        return f"temperature {member['temperature']} is not positive"
    if not 0.0 <= member.get("dropout", 0.0) < 1.0:
        return f"dropout {member['dropout']} is not in [0, 1)"
    if member.get("crop", "none") not in _CROPS:
        return f"crop {member['crop']!r} is not one of {', '.join(_CROPS)}"
    sha = member.get("weights_sha256", "")
    if sha and not _SHA256.fullmatch(sha):
        return f"weights_sha256 {sha!r} is not a sha256 checksum"
    return None
