"""Training recipes as data: dataclasses that round-trip through YAML, with `key=value` overrides.

A config file may name only known keys, so a typo fails loudly instead of silently
training with a default; every value is checked against one table of rules (`RULES`), so a
value of the wrong kind or out of range fails in one line before any work starts, whether it
came from a file, a `--set` or a checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pneumo.errors import PneumoError, check_path, refuse, short
from pneumo.utils.reading import Refusals, os_reason, read_regular

__all__ = [
    "RULES",
    "AugmentConfig",
    "Config",
    "Rule",
    "apply_overrides",
    "check_config",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "named_configs",
]


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
    model: str = "resnet18"  # a name from pneumo.models.list_models() (`pneumo models`)
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
    # "content": crop each film to its content box before the network (pneumo.models.framing)
    crop: str = "none"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    select: str = "best"  # checkpoint used as the run's model: "best" by select_metric, or "last"
    select_metric: str = "roc_auc"  # "roc_auc" | "loss" | "accuracy"
    # a number; "youden" (max sensitivity + specificity on validation); "shift" (best mean
    # balanced accuracy over validation under simulated acquisition shifts, see robustness.py); or
    # "teacher" (a distilled student keeps its teacher's operating point: it learnt the teacher's
    # calibrated probabilities, so the same threshold gives it the teacher's sensitivity/specificity balance)
    threshold: Any = 0.5
    # temperature scaling of the logits: "none", "val" (fitted on validation), or "shift" (on
    # validation and its shifted copies together, see pneumo.evaluation.calibration)
    calibration: str = "none"
    # films the model must not judge (a folder), to fit the input check's probe against: "auto"
    # is ood/adult_other_hospitals beside the data's chest_xray folder, where ../shared/data
    # has it; "none" leaves the distance check alone. Never training data for the classifier.
    outliers: str = "auto"
    # a network to learn from besides the labels: "none", "bundled" (the model shipped in pneumo) or a run or
    # model folder; its calibrated probabilities on `distill_views` fixed augmented views of each training
    # film are computed once and cached (pneumo.training.distill), and the loss is (1 - distill_weight)
    # x the labels' + distill_weight x the teacher's, both softened by distill_temperature. A teacher
    # that trained on the run's validation films is refused (its answers would leak their labels):
    # validate on its split (`split_seed` as the teacher's)
    teacher: str = "none"
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    distill_views: int = 8
    amp: bool = True  # bf16 autocast where it is faster: CUDA, and CPUs with native bf16 (AVX512-BF16, AMX)
    compile: bool = False  # torch.compile the training step's model (worth it on a GPU for long runs)
    # on CUDA, record the model's forward and backward once as CUDA graphs and replay them:
    # a small CNN's step is otherwise bound by the CPU launching hundreds of kernels
    cuda_graphs: bool = True
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    eval_batch_size: int = 256
    cache_dir: str = ""  # "" = $PNEUMO_CACHE or ~/.cache/pneumo
    workers: int = 0  # decoding threads; 0 = number of cores
    strict: bool = False  # stop at the first image that cannot be read, instead of skipping it


_MAX_CONFIG_BYTES = 1_000_000  # a config is a few hundred bytes; this bounds reading and parsing
_MAX_OVERRIDE_CHARS = 10_000  # a `--set` value: longer than any path or number a config holds
_MAX_DEPTH = 10  # mapping nesting a YAML config may have; pneumo's own configs nest 2 deep
_MAX_NODES = 1000  # YAML values in one config (pneumo writes about 60): pure-Python YAML takes ~40 us each
_MAX_NUMBER_CHARS = 100  # of a number's text; longer ones are refused as text, never converted
_FLOAT32_MAX = 3.4e38


@dataclass(frozen=True)
class Rule:
    """What one config key accepts: a kind (bool, int, float or str) with a range, or choices.

    `low`/`high` bound a number (or a string's length); `open_low`/`open_high` exclude the
    bound itself. For a str, `choices` are the only values; for a float they are words
    accepted besides numbers (the threshold's "youden"/"shift"). `why` goes into the message.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    why: str = ""

    def describe(self) -> str:
        """The allowed values in words, e.g. "in (0, 1], a finite number"."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            if self.choices:
                return f"one of {', '.join(self.choices)}"
            return f"a string of {_number(self.low or 0)}-{_number(self.high or 0)} characters without NUL bytes"
        interval = f"{'(' if self.open_low else '['}{_number(self.low)}, {_number(self.high)}{')' if self.open_high else ']'}"
        text = f"in {interval}, {'a whole number' if self.kind is int else 'a finite number'}"
        return f"{text}, or one of {', '.join(self.choices)}" if self.choices else text


def _number(x: float | None) -> str:
    if x is None:
        return "inf"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


_PATH = Rule(str, 1, 4096, why="a path")
_NAME = Rule(str, 1, 200)
_UNIT = Rule(float, 0, 1, open_high=True)  # [0, 1): decays, dropout, smoothing
_P = Rule(float, 0, 1, why="a probability")

# Every key of Config and AugmentConfig, checked by `_coerce` wherever a config comes from (a
# file, `--set`, a checkpoint's `config`); tests/test_config.py checks that none is missing.
RULES: dict[str, Rule] = {
    "data": _PATH,
    "model": _NAME,
    "task": Rule(str, choices=("binary", "pathogen")),
    "image_size": Rule(int, 32, 1024, why="pixels a side; memory grows with its square"),
    "batch_size": Rule(int, 2, 4096, why="BatchNorm needs 2 images; more than 4096 does not fit in memory"),
    "epochs": Rule(int, 1, 10_000),
    "seed": Rule(int, 0, 2**32 - 1, why="NumPy seeds are 32-bit"),
    "split_seed": Rule(int, -1, 2**32 - 1, why="-1: the same as seed"),
    "train_split": _NAME,
    "split": Rule(str, choices=("patient", "image")),
    "val_fraction": Rule(float, 0, 1, open_low=True, open_high=True, why="the share of training images held out"),
    "merge_val": Rule(bool),
    "limit": Rule(int, 0, 10**9, why="0: all images"),
    "optimizer": Rule(str, choices=("adam", "adamw", "sgd")),
    # not (0, 10]: absurd rates must reach the loop's divergence check (test_loop uses 1e30); the
    # bound keeps the rate finite in the float32 arithmetic of the optimiser
    "lr": Rule(float, 0, _FLOAT32_MAX, open_low=True, why="the learning rate"),
    "weight_decay": Rule(float, 0, 10),
    "adam_eps": Rule(float, 0, 1, open_low=True),
    "momentum": Rule(float, 0, 1, open_high=True, why="sgd only"),
    "schedule": Rule(str, choices=("constant", "cosine")),
    "warmup_epochs": Rule(float, 0, 10_000, why="and at most epochs"),
    "balance": Rule(str, choices=("class_weights", "none")),
    "label_smoothing": _UNIT,
    "ema": Rule(float, 0, 1, open_high=True, why="a per-step decay such as 0.99; 0 turns it off"),
    "bn_recalibrate": Rule(int, 0, 1_000_000, why="training images; 0 turns it off"),
    "dropout": _UNIT,
    "crop": Rule(str, choices=("none", "content")),
    "select": Rule(str, choices=("best", "last")),
    "select_metric": Rule(str, choices=("roc_auc", "loss", "accuracy")),
    "threshold": Rule(float, 0, 1, choices=("youden", "shift", "teacher"), why="the decision threshold on P(pneumonia)"),
    "calibration": Rule(str, choices=("none", "val", "shift")),
    "outliers": Rule(str, 1, 4096, why="a folder, 'auto' or 'none'"),
    "teacher": Rule(str, 1, 4096, why="none, bundled, or a run or model folder"),
    "distill_weight": Rule(float, 0, 1, why="the teacher's share of the loss"),
    "distill_temperature": Rule(float, 0, 100, open_low=True, why="softens teacher and student alike"),
    "distill_views": Rule(int, 1, 64, why="fixed augmented views of each training film the teacher answers for"),
    "amp": Rule(bool),
    "compile": Rule(bool),
    "cuda_graphs": Rule(bool),
    "device": Rule(str, choices=("auto", "cpu", "cuda")),
    "eval_batch_size": Rule(int, 1, 8192),
    "cache_dir": Rule(str, 0, 4096, why="'' for the default"),
    "workers": Rule(int, 0, 256, why="0: one per core"),
    "strict": Rule(bool),
    "augment.hflip": _P,
    "augment.rotate_deg": Rule(float, 0, 180, why="degrees"),
    "augment.scale": Rule(float, 0, 0.9, why="a zoom of 1 +- scale must stay positive"),
    "augment.translate": Rule(float, 0, 0.5, why="a fraction of the side"),
    "augment.brightness": Rule(float, 0, 1, why="intensities are in [0, 1]"),
    "augment.contrast": Rule(float, 0, 1, why="a contrast factor of 1 +- contrast must stay non-negative"),
    "augment.gamma": Rule(float, 0, 2, why="|log gamma|"),
    "augment.noise": Rule(float, 0, 1, why="a standard deviation on intensities in [0, 1]"),
    "augment.aspect": Rule(float, 0, 2, why="|log aspect ratio|"),
    "augment.erase": _P,
}


def named_configs() -> dict[str, Path]:
    """The recipes shipped with pneumo, by name (`seed`, `default`, `cpu`)."""
    folder = resources.files("pneumo") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


# --- checking values ------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_int(value: Any) -> int | None:
    """An int from an int, an integral finite float or a numeric string; None for anything else (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= _MAX_NUMBER_CHARS:
        try:
            return int(value.strip())
        except ValueError:
            value = _as_float(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    """A finite float from an int, a float or a numeric string (YAML reads `1e-4` as a string); else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str) and len(value) > _MAX_NUMBER_CHARS:
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _check(key: str, rule: Rule, value: Any) -> Any:
    """`value` converted to the rule's kind, or a PneumoError naming the key, the rule and the value."""
    checked: Any = None
    if rule.kind is bool:
        checked = value if isinstance(value, bool) else None
    elif rule.kind is str:
        text = "" if value is None else str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if isinstance(text, str):
            if rule.choices:
                checked = text if text in rule.choices else None
            elif (rule.low or 0) <= len(text) <= (rule.high or 0) and "\x00" not in text:
                checked = text
    elif isinstance(value, str) and value in rule.choices:
        checked = value
    else:
        number = _as_int(value) if rule.kind is int else _as_float(value)
        if number is not None and _in_range(number, rule):
            checked = number
    if checked is None:
        why = f" ({rule.why})" if rule.why else ""
        raise PneumoError(f"config key '{key}' must be {rule.describe()}{why}; got {short(value)}")
    return checked


def _in_range(x: float, rule: Rule) -> bool:
    if rule.low is not None and (x < rule.low or (rule.open_low and x == rule.low)):
        return False
    return rule.high is None or not (x > rule.high or (rule.open_high and x == rule.high))


def _coerce(cfg: Config) -> Config:
    """Check every value against RULES, converting YAML/CLI scalars where that is unambiguous."""
    for key, rule in RULES.items():
        owner, _, name = key.rpartition(".")
        target = cfg.augment if owner else cfg
        setattr(target, name, _check(key, rule, getattr(target, name)))
    if cfg.warmup_epochs > cfg.epochs:
        raise PneumoError(f"config key 'warmup_epochs' must be at most epochs ({cfg.epochs}); got {short(cfg.warmup_epochs)}")
    if cfg.threshold == "teacher" and cfg.teacher == "none":
        raise PneumoError("config key 'threshold' is teacher, but no teacher is set; set teacher, or choose a number, youden or shift")
    return cfg


def _unknown(key: Any, where: str, known: list[str]) -> PneumoError:
    """The error for a key no rule names, with the nearest known key when one is close."""
    name = f"{where}{key}" if isinstance(key, str) else key
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5) if isinstance(key, str) and len(key) <= 100 else []
    hint = f"; did you mean '{where}{close[0]}'?" if close else ";"
    return PneumoError(f"unknown config key {short(name)}{hint} known keys: {', '.join(where + k for k in sorted(known))}")


def _from_dict(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise PneumoError(f"config {'key ' + repr(where[:-1]) + ' ' if where else ''}must be a mapping of key: value; got {short(values)}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str) or key not in known:
            raise _unknown(key, where, list(known))
        if key == "augment":
            value = _from_dict(AugmentConfig, value, "augment.")
        kwargs[key] = value
    return cls(**kwargs)


# --- reading --------------------------------------------------------------------------------------


class _Refused(yaml.YAMLError):
    """YAML that is valid but that a config never needs (anchors, deep nesting, repeated keys)."""


class _ConfigLoader(yaml.SafeLoader):
    """A SafeLoader for configs: no anchors or aliases at all (a flat list of settings never
    needs them, and refusing the first `&` stops a billion-laughs document before it expands),
    nesting at most 10 deep and at most 1000 values (a 1 MB list of numbers would otherwise
    take 20 s), no repeated key, and integers past Python's digit limit or dates left as text
    for the rules to judge by key."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                f"YAML anchors and aliases (&name, *name) are not allowed in a config (line {event.start_mark.line + 1}); write each value out"
            )
        if self._depth >= _MAX_DEPTH:
            raise _Refused(f"nested more than {_MAX_DEPTH} deep (line {event.start_mark.line + 1}); a config is a mapping of key: value")
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _Refused(f"more than {_MAX_NODES} YAML values (line {event.start_mark.line + 1}); a config has one per setting, about 60")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    first = seen.setdefault((key_node.tag, key_node.value), line)
                    if first != line:
                        raise _Refused(f"key {short(key_node.value)} is given twice (lines {first} and {line})")
        return super().construct_mapping(node, deep)

    def construct_number_or_text(self, node: Any) -> Any:
        """A number, or its text where it is longer than any number a config holds: base-60
        integers (`1:59:59...`) take quadratic time, and past Python's digit limit int() raises."""
        if len(node.value) > _MAX_NUMBER_CHARS:
            return node.value
        try:
            return self.construct_yaml_int(node) if node.tag.endswith(":int") else self.construct_yaml_float(node)
        except ValueError:
            return node.value

    def construct_text(self, node: Any) -> Any:
        return node.value  # a config holds no dates: `data: 2024-01-01` is a folder


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_number_or_text)
_ConfigLoader.add_constructor("tag:yaml.org,2002:float", _ConfigLoader.construct_number_or_text)
_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _ConfigLoader.construct_text)


def _parse_yaml(text: str) -> Any:
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    """The file's text, refusing anything but a regular UTF-8 file of at most 1 MB without blocking on it."""

    def unreadable(exc: OSError | ValueError, found: bool) -> PneumoError:
        return PneumoError(f"cannot read config {path if found else short(str(path))}: {_one_line(os_reason(exc))}")

    def not_regular(mode: int) -> PneumoError:
        if stat.S_ISDIR(mode):
            return PneumoError(f"config {path} is a folder; give a YAML file or one of {', '.join(sorted(named_configs()))}")
        return PneumoError(f"config {path} is not a regular file (a device, FIFO or socket); give a YAML file")  # /dev/zero never ends

    def too_large(size: int, stated: bool) -> PneumoError:
        what = f"is {size} bytes, over" if stated else "is over"
        return PneumoError(f"config {path} {what} the limit of 1 MB; a config is a short list of key: value lines")

    data = read_regular(path, _MAX_CONFIG_BYTES, Refusals(unreadable, not_regular, too_large))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PneumoError(
            f"config {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None


def _parse_file(path: Path) -> dict[str, Any]:
    try:
        values = _parse_yaml(_read_text(path))
    except PneumoError:
        raise
    except _Refused as exc:
        raise PneumoError(f"config {path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise PneumoError(f"config {path} is not valid YAML{where}: {_one_line(exc.problem or exc.context or 'unreadable')}") from None
    except yaml.YAMLError as exc:
        raise PneumoError(f"config {path} is not valid YAML: {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - anything a YAML constructor raises (RecursionError, ...) is about the file
        raise PneumoError(f"config {path} could not be read as YAML: {type(exc).__name__}: {_one_line(exc)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PneumoError(f"config {path} must be a mapping of key: value; got {short(values)}")
    return values


def _override_value(key: str, raw: str) -> Any:
    """A `--set` value parsed as YAML with the config's loader; a string key keeps the text as typed
    (`data=0123` is a folder, not the octal number 83)."""
    if len(raw) > _MAX_OVERRIDE_CHARS:
        raise PneumoError(f"the value of config key '{key}' is {len(raw)} characters long; no config value needs more than 4096")
    try:
        value = _parse_yaml(raw) if raw else ""
    except Exception:  # noqa: BLE001 - not YAML (or refused): the text itself, for the rules to judge
        value = raw
    rule = RULES.get(key)
    if rule is not None and rule.kind is str and not isinstance(value, str):
        value = "" if value is None else raw
    return value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `key=value` strings (values parsed as YAML; `augment.rotate_deg=10` reaches nested keys)."""
    values = config_to_dict(cfg)
    for item in overrides:
        if not isinstance(item, str):
            raise PneumoError(f"override {short(item)} must be a string that looks like key=value")
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PneumoError(f"override {short(item)} must look like key=value")
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            if not isinstance(target.get(parent), dict):
                raise PneumoError(f"unknown config key {short(key)}; see `pneumo train --help` or configs/default.yaml")
            target = target[parent]
        if leaf not in target:
            raise _unknown(leaf, key[: len(key) - len(leaf)], list(target))
        target[leaf] = _override_value(key, raw)
    return _coerce(_from_dict(Config, values, ""))


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a recipe from a YAML file or a shipped name (`seed`, `default`, `cpu`).

    The file must be a regular UTF-8 file of at most 1 MB, with no YAML anchors; every value
    is checked against RULES.

    Example:
        >>> cfg = load_config("seed", ["epochs=2"])
        >>> cfg.model, cfg.epochs
        ('seed_cnn', 2)
    """
    check_path("source", source, what="a YAML file or a shipped config name (seed, default, cpu)", optional=True)
    if overrides is not None and (isinstance(overrides, (str, bytes)) or not isinstance(overrides, (list, tuple))):
        raise refuse("overrides", "a list of 'key=value' strings, or None", overrides)
    values: dict[str, Any] = {}
    if source is not None:
        path = Path(source)
        try:
            exists = os.path.lexists(path)
        except (OSError, ValueError):  # lexists swallows most; a NUL byte or an odd type reaches here
            exists = False
        if not exists:
            shipped = named_configs()
            if str(source) in shipped:
                path = shipped[str(source)]
            else:
                raise PneumoError(f"config {short(str(source))} not found: give a YAML file or one of {', '.join(sorted(shipped))}")
        values = _parse_file(path)
    cfg = _coerce(_from_dict(Config, values, ""))
    return apply_overrides(cfg, overrides or [])


def config_from_dict(values: dict[str, Any]) -> Config:
    """A config from `config_to_dict`'s output (e.g. a checkpoint's `config`), checked as a file would be."""
    return _coerce(_from_dict(Config, values, ""))


def check_config(value: Any, name: str = "config") -> Config:
    """`value` when it is a Config whose every setting passes RULES, as a loaded one does: a Config built
    by hand (`Config(epochs=0)`) is checked like a file, and a dict or a recipe's name is refused, naming
    `load_config`, before a run starts."""
    if not isinstance(value, Config):
        raise refuse(name, 'a Config: load_config("seed") or load_config("my.yaml", ["epochs=2"]) makes one', value)
    try:
        values = config_to_dict(value)
    except (TypeError, ValueError, RecursionError):  # a setting that cannot even be copied (a generator, a lock)
        raise refuse(name, "a Config whose settings are plain values (numbers, strings, lists)", value) from None
    config_from_dict(values)
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A plain dict (YAML/JSON-ready) of every setting, defaults included."""
    return dataclasses.asdict(cfg)
