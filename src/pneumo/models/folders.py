"""What pneumo writes into a run folder and a model folder, and how an old one is replaced.

A folder is never overwritten silently: `overwrite` empties only a folder that is recognisably
pneumo's (its config.yaml or meta.json) and holds nothing but the files pneumo writes
(`RUN_LAYOUT`, `MODEL_LAYOUT`), and says so. Shared by `pneumo train` (a run folder),
`pneumo ensemble` and `pneumo calibrate` (model folders).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from pneumo.errors import PneumoError, describe_size
from pneumo.models.meta import FEATURES, META, WEIGHTS
from pneumo.utils.known_contents import Layout, known_contents
from pneumo.utils.output_checks import output_folder

__all__ = ["CHECKPOINT_LAYOUT", "MODEL_LAYOUT", "REPORT", "RUN_LAYOUT", "TRAINING_FILMS", "prepare_output_folder"]

logger = logging.getLogger(__name__)

TRAINING_FILMS = "training_films.json"  # which films a model trained and validated on (pneumo.evaluation.overlap)
REPORT = "val_report.json"  # written last: its presence says the run finished

_FIGURES = ("roc.png", "confusion.png", "reliability.png")
CHECKPOINT_LAYOUT: Layout = {
    WEIGHTS: None,
    META: None,
    FEATURES: None,
    TRAINING_FILMS: None,
    "state.json": None,
    "state-*.safetensors": None,
}  # state files: pneumo.training.state
# everything pneumo writes into a run folder (train) and a model folder (ensemble, calibrate): nothing else is deleted
RUN_LAYOUT: Layout = {
    "config.yaml": None,
    "resumes.json": None,  # pneumo.training.run_dir: what each resume changed
    "split.csv": None,
    "history.csv": None,
    "history.png": None,
    REPORT: None,
    **dict.fromkeys(_FIGURES),
    "checkpoints": {"last": CHECKPOINT_LAYOUT, "best": CHECKPOINT_LAYOUT},
    "model": CHECKPOINT_LAYOUT,
    "tensorboard": {"events.out.tfevents.*": None},  # pneumo.training.tracking
}
MODEL_LAYOUT: Layout = {**CHECKPOINT_LAYOUT, REPORT: None, "site_calibration.json": None, **dict.fromkeys(_FIGURES)}
# keys every config.yaml a run writes holds, and every meta.json a checkpoint has (of any format version)
_CONFIG_KEYS = {"data", "model", "epochs", "seed"}
_META_KEYS = {"format_version", "architecture", "weights_sha256"}


def _holds_keys(path: Path, keys: set[str]) -> bool:
    """Whether a YAML (or JSON) file is a mapping with all of `keys`: how pneumo's own files are told from others of the name.
    Not a full load: a run or model of an older pneumo version is still recognised as pneumo's."""
    try:
        values = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(values, dict) and keys <= set(values)


def _previous_output(folder: Path) -> tuple[str, str, Layout]:
    """What pneumo output `folder` holds, recognised by pneumo's config.yaml (a run) or meta.json (a
    model folder: ensemble, calibrate); refused otherwise."""
    if (folder / "config.yaml").is_file():
        if not _holds_keys(folder / "config.yaml", _CONFIG_KEYS):
            raise PneumoError(
                f"{folder} holds a config.yaml that is not a pneumo run's config; refusing to overwrite it: choose another --out"
            )
        return "run", "a pneumo run folder", RUN_LAYOUT
    if (folder / META).is_file():
        if not _holds_keys(folder / META, _META_KEYS):
            raise PneumoError(f"{folder} holds a {META} that is not a pneumo checkpoint's; refusing to overwrite it: choose another --out")
        return "model", "a pneumo model folder", MODEL_LAYOUT
    raise PneumoError(
        f"{folder} is not empty and does not look like a pneumo run folder (it has no config.yaml or meta.json of pneumo's); "
        "refusing to overwrite it: choose another --out"
    )


def prepare_output_folder(out: str | Path, overwrite: bool) -> Path:
    """An empty run folder; an existing non-empty one only with overwrite, and only if it is
    recognisably a pneumo run or model folder holding nothing but pneumo's files.

    Checked before any work: `out` must be a folder (or be makeable as one) that can be written.
    With overwrite, a previous run's files are deleted one by one, and the log says how many: a
    folder with anything else in it (a src/, a notes file, a symlink) is refused whole.
    """
    run_dir = output_folder(out, "--out")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise PneumoError(f"{run_dir} already exists and is not empty; choose another --out or pass --overwrite")
        noun, kind, layout = _previous_output(run_dir)
        previous = known_contents(run_dir, layout, kind)  # refuses, deleting nothing, a folder with anything else in it
        logger.info(f"removing the previous {noun} in {run_dir} ({len(previous.files)} files, {describe_size(previous.n_bytes)})")
        previous.remove()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
