"""A checkpoint's metadata as a typed record: how to rebuild and feed the network, where its
decision threshold lies, and how it came to be. Torch-free, so the ONNX runtime reads it too.

On disk it is `meta.json` beside `weights.safetensors` (and, in an ONNX export's JSON, under
`"checkpoint"`). `CheckpointMeta.from_dict` checks every field's type once, on load, so no
reader needs `.get` fallbacks.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pneumo.errors import PneumoError
from pneumo.tasks import Task, get_task

__all__ = ["FORMAT_VERSION", "WEIGHTS", "META", "FEATURES", "CheckpointMeta"]

FORMAT_VERSION = 1
WEIGHTS, META = "weights.safetensors", "meta.json"
FEATURES = "features.safetensors"  # optional: training-feature statistics (pneumo.inference.features)


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
    in_chans: int = 1
    dropout: float = 0.0
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
    weights_sha256: str = ""  # set when the checkpoint is written
    format_version: int = FORMAT_VERSION

    @property
    def task_spec(self) -> Task:
        return get_task(self.task)

    def replace(self, **changes: Any) -> CheckpointMeta:
        """A copy with some fields changed (e.g. the epoch, the chosen threshold)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, in field order."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "the metadata") -> CheckpointMeta:
        """Read metadata written by `to_dict`, checking that every field has its type; a PneumoError names `where`."""
        if not isinstance(values, dict):
            raise PneumoError(f"{where} is not a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [name for name, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise PneumoError(f"{where} lacks {', '.join(missing)}")
        kwargs = {name: _typed(name, values[name], where) for name in fields if name in values}
        meta = cls(**kwargs)
        task = get_task(meta.task) if meta.task in ("binary", "pathogen") else None
        if task is None:
            raise PneumoError(f"{where}: task {meta.task!r} is not binary or pathogen")
        if list(meta.classes) != list(task.classes) or meta.num_outputs != task.num_outputs:
            raise PneumoError(f"{where}: classes {meta.classes} and {meta.num_outputs} outputs do not fit the {meta.task} task")
        if not meta.temperature > 0:
            raise PneumoError(f"{where}: temperature {meta.temperature} is not positive")
        return meta


_INT_FIELDS = {"num_outputs", "image_size", "in_chans", "n_train", "n_val", "format_version"}
_FLOAT_FIELDS = {"mean", "std", "threshold", "dropout", "temperature"}
_STR_FIELDS = {"architecture", "task", "threshold_method", "data_source", "data_fingerprint", "pneumo_version", "torch_version", "created", "weights_sha256"}
_DICT_FIELDS = {"config", "val_metrics", "val_ci95", "site_calibration"}


def _typed(name: str, value: Any, where: str) -> Any:
    """`value` as field `name`'s type, or a PneumoError: JSON's numbers are loose (1 for 1.0), its booleans are not numbers."""
    wrong = PneumoError(f"{where}: {name} is {value!r}, which is not a valid {name}")
    if isinstance(value, bool) and name not in _DICT_FIELDS:
        raise wrong
    if name in _INT_FIELDS:
        if not isinstance(value, int):
            raise wrong
        return value
    if name == "epoch":
        if value is not None and not isinstance(value, int):
            raise wrong
        return value
    if name in _FLOAT_FIELDS:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise wrong
        return float(value)
    if name in _STR_FIELDS:
        if not isinstance(value, str):
            raise wrong
        return value
    if name in _DICT_FIELDS:
        if not isinstance(value, dict):
            raise wrong
        return value
    if name == "members":
        if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
            raise wrong
        return value
    if name == "classes":
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise wrong
        return list(value)
    return value
