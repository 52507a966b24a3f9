"""The run folder: made for a new run, checked for a resumed one, and its history file.

A run folder holds everything about one run (config.yaml, split.csv, history.csv, plots,
val_report.json, checkpoints/{last,best}/, model/) and is never overwritten silently:
`--overwrite` empties only a folder that is recognisably pneumo's (its config.yaml or meta.json)
and holds nothing but the files pneumo writes (`RUN_LAYOUT`, `MODEL_LAYOUT`), and says so.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pneumo.config import Config, config_to_dict, load_config
from pneumo.errors import PneumoError, describe_size
from pneumo.models.checkpoint import checkpoint_epoch, copy_checkpoint
from pneumo.models.folders import MODEL_LAYOUT, REPORT, RUN_LAYOUT, prepare_output_folder
from pneumo.training.state import STATE, RunSoFar, saved_epoch
from pneumo.utils.atomic import atomic_write
from pneumo.utils.output_checks import output_folder
from pneumo.utils.temp_files import remove_stale_temps

__all__ = [
    "open_run",
    "prepare_run_dir",
    "resume_run_dir",
    "complete_best_copy",
    "write_history",
    "remove_leftover_temps",
    "REPORT",
    "RUN_LAYOUT",
    "MODEL_LAYOUT",
]

logger = logging.getLogger(__name__)

prepare_run_dir = prepare_output_folder  # the run folder of `pneumo train` is one such output folder


# what a resumed run's config.yaml may say otherwise than the run trained with: where the data and
# cache are now and how many loader workers (the data's content is checked by its fingerprint), and
# `epochs`, which may grow (the rest of the learning-rate schedule is laid out over the new length)
RESUME_MAY_MOVE = ("data", "cache_dir", "workers")
RESUMES = "resumes.json"


def _edits_since_training(run_dir: Path, saved: Config, done: int) -> dict[str, list[object]]:
    """What config.yaml says otherwise than the config the last checkpoint trained with, as {key: [trained, now]};
    a PneumoError for an edit a resume cannot honour."""
    try:  # only its config: whether the checkpoint itself is sound is the training loop's to check, and say
        trained = json.loads((run_dir / "checkpoints" / "last" / "meta.json").read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        trained = None
    if not isinstance(trained, dict):
        return {}
    now = config_to_dict(saved)
    changed = {k: [trained.get(k), now[k]] for k in now if k in trained and trained[k] != now[k]}
    refused = {k: v for k, v in changed.items() if k not in RESUME_MAY_MOVE and not (k == "epochs" and v[1] > v[0])}
    if "epochs" in changed and changed["epochs"][1] <= done:
        refused["epochs"] = changed["epochs"]
    if refused:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise PneumoError(
            f"{run_dir / 'config.yaml'} was edited since the run trained ({listed}); a resumed run keeps its recipe: only epochs may grow "
            f"(past the {done} done) and {', '.join(RESUME_MAY_MOVE)} may change. Put it back, or start a new run with the new config"
        )
    return changed


def _record_resume(run_dir: Path, done: int, changed: dict[str, list[object]]) -> None:
    path = run_dir / RESUMES
    try:
        earlier = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        earlier = []
    entry = {"after_epoch": done, "changed": changed, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write(path, json.dumps([*(earlier if isinstance(earlier, list) else []), entry], indent=2))


def resume_run_dir(out: str | Path, config: Config | None) -> tuple[Path, Config]:
    """The run folder to continue and its config; refuses a folder that cannot, or need not, be resumed.

    A resumed run keeps the config it started with: any other would make it a different run. Its
    config.yaml may have been edited only where `RESUME_MAY_MOVE` and `epochs` allow; each resume
    that changed something is recorded in `resumes.json`.
    """
    run_dir = Path(out)
    if not (run_dir / "config.yaml").is_file():
        raise PneumoError(f"{run_dir} is not a pneumo run folder (it has no config.yaml); give the folder of the run to continue")
    saved = load_config(run_dir / "config.yaml")
    if config is not None and config != saved:
        given, started = config_to_dict(config), config_to_dict(saved)
        changed = ", ".join(f"{k} (run: {started[k]!r}, given: {given[k]!r})" for k in started if given[k] != started[k])
        raise PneumoError(
            f"the config differs from the one run {run_dir} started with in {changed}; a resumed run keeps its config: give no other"
        )
    last = run_dir / "checkpoints" / "last"
    done = saved_epoch(last) if (last / STATE).exists() else 0  # no state: the training loop says what it does
    if done >= saved.epochs and (run_dir / REPORT).exists():
        raise PneumoError(f"run {run_dir} already finished all {saved.epochs} epochs; its model is in {run_dir / 'model'}")
    output_folder(run_dir, "the run folder")  # a read-only one is refused now, not at the end of the next epoch
    changed = _edits_since_training(run_dir, saved, done)
    for key, (old, new) in changed.items():
        logger.info(f"resuming with {key} {old!r} -> {new!r} (config.yaml)")
    if changed:
        _record_resume(run_dir, done, changed)
    return run_dir, saved


def open_run(config: Config | None, out: str | Path, overwrite: bool, resume: bool) -> tuple[Path, Config]:
    """The run folder and config: a new folder for a new run, the existing one for a resumed run
    (cleared of the temporary files a killed run left in it)."""
    if resume:
        if overwrite:
            raise PneumoError("resume continues a run and overwrite replaces it; ask for one of them")
        run_dir, config = resume_run_dir(out, config)
        remove_leftover_temps(run_dir)
        return run_dir, config
    if config is None:
        raise PneumoError("a new run needs a config (only a resumed run reads its own)")
    run_dir = prepare_run_dir(out, overwrite)
    atomic_write(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return run_dir, config


def remove_leftover_temps(folder: Path) -> int:
    """Delete the temporary files that writes killed midway left in a run folder and below it
    (pneumo's names only, no symlink followed), logging how much; returns the bytes freed."""
    n_files, n_bytes = remove_stale_temps(folder, recursive=True)
    if n_files:
        logger.info(
            f"removed {n_files} temporary file{'s' if n_files > 1 else ''} ({describe_size(n_bytes)}) that interrupted writes left in {folder}"
        )
    return n_bytes


def complete_best_copy(checkpoints: Path, so_far: RunSoFar) -> None:
    """Finish copying a new best epoch to best/ when the run stopped after saving its state but before the copy."""
    if not so_far.best_epoch or checkpoint_epoch(checkpoints / "best") == so_far.best_epoch:
        return
    if checkpoint_epoch(checkpoints / "last") != so_far.best_epoch:
        raise PneumoError(
            f"{checkpoints}: neither best/ nor last/ holds epoch {so_far.best_epoch}, which the training state names "
            "as the best; the folder was changed by hand: train the run again (--overwrite)"
        )
    copy_checkpoint(checkpoints / "last", checkpoints / "best")


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """history.csv: one row per finished epoch, rewritten whole (atomically) after each."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, buffer.getvalue())
