"""Training recipes as data: dataclasses that round-trip through YAML, with `key=value` overrides.

A config file may name only known keys, so a typo fails loudly instead of silently
training with a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pneumo.errors import PneumoError

__all__ = ["AugmentConfig", "Config", "apply_overrides", "config_from_dict", "config_to_dict", "load_config", "named_configs"]


@dataclass
class AugmentConfig:
    """Batch augmentation applied on the training device; all off by default (the notebook had none)."""

    hflip: float = 0.0  # probability of a left-right flip (anatomy is not symmetric: off by default)
    rotate_deg: float = 0.0  # maximum absolute rotation
    scale: float = 0.0  # maximum relative zoom in or out
    translate: float = 0.0  # maximum shift as a fraction of the side
    brightness: float = 0.0  # maximum additive shift, intensities in [0, 1]
    contrast: float = 0.0  # maximum relative contrast change
    gamma: float = 0.0  # maximum |log gamma|
    noise: float = 0.0  # maximum Gaussian noise standard deviation
    aspect: float = 0.0  # maximum |log aspect ratio| change (0.29: 0.75-1.33), as films of other shapes squashed to a square
    erase: float = 0.0  # probability of blanking a band at an edge or a corner (up to 15% of the side): no frame or marker shortcuts

    @property
    def enabled(self) -> bool:
        return any(v > 0 for v in dataclasses.asdict(self).values())


@dataclass
class Config:
    """One training run, every knob visible. Paths are resolved against the working directory."""

    data: str = "../shared/data"  # Kaggle-style root, class-folder directory, or CSV manifest
    model: str = "resnet18"  # a name from pneumo.models.available_models()
    task: str = "binary"  # "binary" (normal/pneumonia) or "pathogen" (normal/bacteria/virus)
    image_size: int = 224
    batch_size: int = 32
    epochs: int = 20
    seed: int = 0
    # the seed of the train/validation split (and of `limit`'s sample); -1: `seed`. Ensemble
    # members trained with one split_seed and different seeds share their validation images
    split_seed: int = -1
    # which split to train on when DATA is a Kaggle-style root; "val" is carved from it
    train_split: str = "train"
    split: str = "patient"  # "patient": grouped + stratified; "image": the notebook's random split
    val_fraction: float = 0.2
    merge_val: bool = False  # the notebook merged the official val/ into train before re-splitting
    limit: int = 0  # use at most this many training images (stratified sample); 0 = all
    optimizer: str = "adamw"  # "adam" | "adamw" | "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # "constant" | "cosine"
    warmup_epochs: float = 0.0
    balance: str = "class_weights"  # "class_weights" (w_c = N / (K N_c)) | "none"
    label_smoothing: float = 0.0
    ema: float = 0.0  # decay of an exponential moving average of the weights per step; 0 = off
    # recompute BatchNorm statistics over this many training images before each validation
    # (exact averages instead of the slow running ones; essential with EMA); 0 = off
    bn_recalibrate: int = 0
    dropout: float = 0.0  # classifier dropout for models that take it
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    select: str = "best"  # checkpoint used as the run's model: "best" by select_metric, or "last"
    select_metric: str = "roc_auc"  # "roc_auc" | "loss" | "accuracy"
    # a number; "youden" (max sensitivity + specificity on validation); or "shift" (best mean
    # balanced accuracy over validation under simulated acquisition shifts, see robustness.py)
    threshold: Any = 0.5
    # temperature scaling of the logits: "none", "val" (fitted on validation), or "shift" (on
    # validation and its shifted copies together, see pneumo.evaluation.calibration)
    calibration: str = "none"
    # films the model must not judge (a folder), to fit the input check's probe against: "auto"
    # is ood/adult_other_hospitals beside the data's chest_xray folder, where ../shared/data
    # has it; "none" leaves the distance check alone. Never training data for the classifier.
    outliers: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    compile: bool = False  # torch.compile the training step's model (worth it on a GPU for long runs)
    # on CUDA, record the model's forward and backward once as CUDA graphs and replay them:
    # a small CNN's step is otherwise bound by the CPU launching hundreds of kernels
    cuda_graphs: bool = True
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    eval_batch_size: int = 256
    cache_dir: str = ""  # "" = $PNEUMO_CACHE or ~/.cache/pneumo
    workers: int = 0  # decoding threads; 0 = number of cores
    strict: bool = False  # stop at the first image that cannot be read, instead of skipping it


_TASKS = ("binary", "pathogen")
_CHOICES: dict[str, tuple[str, ...]] = {
    "task": _TASKS,
    "split": ("patient", "image"),
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("constant", "cosine"),
    "balance": ("class_weights", "none"),
    "select": ("best", "last"),
    "select_metric": ("roc_auc", "loss", "accuracy"),
    "calibration": ("none", "val", "shift"),
    "device": ("auto", "cpu", "cuda"),
}


def named_configs() -> dict[str, Path]:
    """The recipes shipped with pneumo, by name (`seed`, `default`, `cpu`)."""
    folder = resources.files("pneumo") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise PneumoError(
                f"unknown config key '{where}{key}'; known keys: {', '.join(sorted(known))}"
            )
        if key == "augment":
            if not isinstance(value, dict):
                raise PneumoError("config key 'augment' must be a mapping of augmentation settings")
            value = _from_dict(AugmentConfig, value, "augment.")
        kwargs[key] = value
    return cls(**kwargs)


def _coerce(cfg: Config) -> Config:
    """Check types and choices, converting YAML/CLI scalars where that is unambiguous."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = getattr(Config(), f.name)
        if f.name in ("augment", "threshold"):
            continue
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError
            elif isinstance(default, int):
                if isinstance(value, bool) or float(value) != int(value):
                    raise ValueError
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            elif isinstance(default, str):
                value = "" if value is None else str(value)
        except (TypeError, ValueError):
            raise PneumoError(f"config key '{f.name}' must be a {type(default).__name__}, got {value!r}") from None
        setattr(cfg, f.name, value)
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise PneumoError(f"config key '{key}' must be one of {', '.join(choices)}; got {getattr(cfg, key)!r}")
    for f in dataclasses.fields(AugmentConfig):
        try:
            setattr(cfg.augment, f.name, float(getattr(cfg.augment, f.name)))
        except (TypeError, ValueError):
            raise PneumoError(f"config key 'augment.{f.name}' must be a number") from None
    if not (isinstance(cfg.threshold, (int, float)) and 0.0 <= float(cfg.threshold) <= 1.0) and cfg.threshold not in ("youden", "shift"):
        raise PneumoError(f"config key 'threshold' must be a number in [0, 1], 'youden' or 'shift'; got {cfg.threshold!r}")
    if not 0.0 <= cfg.ema < 1.0:
        raise PneumoError(f"config key 'ema' must be in [0, 1) (a per-step decay such as 0.99; 0 turns it off); got {cfg.ema}")
    if cfg.image_size < 32:
        raise PneumoError(f"config key 'image_size' must be at least 32; got {cfg.image_size}")
    if cfg.batch_size < 2 or cfg.epochs < 1:
        raise PneumoError("config keys 'batch_size' (>= 2) and 'epochs' (>= 1) are too small")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise PneumoError(f"config key 'val_fraction' must be between 0 and 1; got {cfg.val_fraction}")
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `key=value` strings (values parsed as YAML; `augment.rotate_deg=10` reaches nested keys)."""
    values = config_to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PneumoError(f"override '{item}' must look like key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        target = values
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            if not isinstance(target.get(parent), dict):
                raise PneumoError(f"unknown config key '{key}'")
            target = target[parent]
        if leaf not in target:
            raise PneumoError(f"unknown config key '{key}'; see `pneumo train --help` or configs/default.yaml")
        target[leaf] = value
    return _coerce(_from_dict(Config, values, ""))


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a recipe from a YAML file or a shipped name (`seed`, `default`, `cpu`).

    Example:
        >>> cfg = load_config("seed", ["epochs=2"])
        >>> cfg.model, cfg.epochs
        ('seed_cnn', 2)
    """
    values: dict[str, Any] = {}
    if source is not None:
        path = Path(source)
        if not path.exists():
            shipped = named_configs()
            if str(source) in shipped:
                path = shipped[str(source)]
            else:
                raise PneumoError(
                    f"config '{source}' not found: give a YAML file or one of {', '.join(sorted(shipped))}"
                )
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise PneumoError(f"config {path} is not valid YAML: {exc}") from None
        if not isinstance(values, dict):
            raise PneumoError(f"config {path} must be a mapping of key: value")
    cfg = _coerce(_from_dict(Config, values, ""))
    return apply_overrides(cfg, overrides or [])


def config_from_dict(values: dict[str, Any]) -> Config:
    """A config from `config_to_dict`'s output (e.g. a checkpoint's `config`), checked as a file would be."""
    return _coerce(_from_dict(Config, values, ""))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A plain dict (YAML/JSON-ready) of every setting, defaults included."""
    return dataclasses.asdict(cfg)
