"""The run folder: made for a new run, checked for a resumed one, and its history file.

A run folder holds everything about one run (config.yaml, split.csv, history.csv, plots,
val_report.json, checkpoints/{last,best}/, model/) and is never overwritten silently.
"""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import yaml

from pneumo.config import Config, config_to_dict, load_config
from pneumo.errors import PneumoError
from pneumo.models.checkpoint import checkpoint_epoch, copy_checkpoint
from pneumo.training.state import STATE, RunSoFar, saved_epoch
from pneumo.utils.files import atomic_write

__all__ = ["open_run", "prepare_run_dir", "resume_run_dir", "complete_best_copy", "write_history", "REPORT"]

REPORT = "val_report.json"  # written last: its presence says the run finished


def prepare_run_dir(out: str | Path, overwrite: bool) -> Path:
    """An empty run folder; an existing non-empty one only with overwrite, and only if it is a run."""
    run_dir = Path(out)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise PneumoError(f"run folder {run_dir} already exists and is not empty; choose another --out or pass --overwrite")
        if not (run_dir / "config.yaml").exists():
            raise PneumoError(f"{run_dir} is not empty and does not look like a pneumo run folder; refusing to overwrite it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def resume_run_dir(out: str | Path, config: Config | None) -> tuple[Path, Config]:
    """The run folder to continue and its config; refuses a folder that cannot, or need not, be resumed.

    A resumed run keeps the config it started with: any other would make it a different run.
    """
    run_dir = Path(out)
    if not (run_dir / "config.yaml").exists():
        raise PneumoError(f"{run_dir} is not a pneumo run folder (it has no config.yaml); give the folder of the run to continue")
    saved = load_config(run_dir / "config.yaml")
    if config is not None and config != saved:
        given, started = config_to_dict(config), config_to_dict(saved)
        changed = ", ".join(f"{k} (run: {started[k]!r}, given: {given[k]!r})" for k in started if given[k] != started[k])
        raise PneumoError(f"the config differs from the one run {run_dir} started with in {changed}; a resumed run keeps its config: give no other")
    last = run_dir / "checkpoints" / "last"
    done = saved_epoch(last) if (last / STATE).exists() else 0  # no state: the training loop says what it does
    if done >= saved.epochs and (run_dir / REPORT).exists():
        raise PneumoError(f"run {run_dir} already finished all {saved.epochs} epochs; its model is in {run_dir / 'model'}")
    return run_dir, saved


def open_run(config: Config | None, out: str | Path, overwrite: bool, resume: bool) -> tuple[Path, Config]:
    """The run folder and config: a new folder for a new run, the existing one for a resumed run."""
    if resume:
        if overwrite:
            raise PneumoError("resume continues a run and overwrite replaces it; ask for one of them")
        return resume_run_dir(out, config)
    if config is None:
        raise PneumoError("a new run needs a config (only a resumed run reads its own)")
    run_dir = prepare_run_dir(out, overwrite)
    atomic_write(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return run_dir, config


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
