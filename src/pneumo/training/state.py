"""The full training state at the end of an epoch, so an interrupted run can go on where it stopped.

A checkpoint (`weights.safetensors` + `meta.json`) holds only the model a run keeps. Continuing
a run exactly also needs the raw training weights (they differ from the EMA ones), the
optimiser's moments and step counts, the schedule's position, the EMA's averages, every random
generator and the history so far. They are stored beside the checkpoint in
`checkpoints/last/`, never pickled:

- `state-EPOCH-HASH.safetensors`: every tensor, under dotted keys (`model.*`, `ema.*`,
  `optimizer.<param index>.<name>`, `rng.<generator>`);
- `state.json`: everything else, with the epoch and the SHA-256 of that tensor file.

`state.json` is the commit point: the tensor file is written under a new name first, then
`state.json` is replaced to point at it, then the previous tensor file is removed. Each write
goes to a temporary file renamed into place, so a crash or a full disk at any moment leaves
`state.json` naming a complete tensor file of the same epoch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel

from pneumo.errors import PneumoError
from pneumo.utils.atomic import write_temp
from pneumo.utils.hashing import sha256_file

__all__ = ["STATE", "STATE_FORMAT_VERSION", "RunSoFar", "TrainingParts", "load_train_state", "save_train_state", "saved_epoch"]

STATE = "state.json"
STATE_FORMAT_VERSION = 1


@dataclass
class TrainingParts:
    """The live objects of a training loop whose state a resumed run must get back bit for bit."""

    model: torch.nn.Module  # the network being trained (not the EMA copy)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: AveragedModel | None
    generators: dict[str, torch.Generator]  # named private generators (batch order, augmentation)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass
class RunSoFar:
    """What the run has done: the last finished epoch, its history rows and the best epoch yet."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -float("inf")
    best_epoch: int = 0


def save_train_state(folder: str | Path, parts: TrainingParts, so_far: RunSoFar, data_fingerprint: str) -> Path:
    """Write the state at the end of epoch `so_far.epoch` into `folder`; returns the path of state.json.

    A failure (a full disk, a vanished folder) raises PneumoError and leaves the state
    saved before intact, so the run can still be resumed from it.
    """
    folder = Path(folder)
    previous = _committed_tensor_file(folder)
    tensors_tmp: Path | None = None
    record_tmp: Path | None = None
    name = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tensors_tmp = write_temp(
            folder / "state.safetensors", lambda path: save_file(_tensors(parts), str(path), metadata={"epoch": str(so_far.epoch)})
        )
        sha = sha256_file(tensors_tmp)
        # named by content: rewriting the file state.json points at could only put the same bytes there
        name = f"state-{so_far.epoch:04d}-{sha[:12]}.safetensors"
        os.replace(tensors_tmp, folder / name)
        record = {
            "format_version": STATE_FORMAT_VERSION,
            "epoch": so_far.epoch,
            "tensors": name,
            "tensors_sha256": sha,
            "device": parts.device.type,
            "data_fingerprint": data_fingerprint,
            "optimizer_lr": [group["lr"] for group in parts.optimizer.param_groups],
            "scheduler": parts.scheduler.state_dict(),
            "history": so_far.history,
            "best_score": so_far.best_score,
            "best_epoch": so_far.best_epoch,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        record_tmp = write_temp(folder / STATE, json.dumps(record, indent=2))
        os.replace(record_tmp, folder / STATE)  # the commit point
    except OSError as exc:
        leftovers = [tensors_tmp, record_tmp, folder / name if name is not None and name != previous else None]
        for path in leftovers:  # a renamed tensor file is left by a failed commit; the temporaries by a failed rename
            if path is not None:
                path.unlink(missing_ok=True)
        then = (
            "the state saved before it is intact: fix that (e.g. free disk space) and resume the run"
            if previous
            else "fix that (e.g. free disk space) and train again"
        )
        raise PneumoError(f"could not save the training state of epoch {so_far.epoch} in {folder} ({exc.strerror or exc}); {then}") from exc
    for stale in folder.glob("state-*.safetensors"):
        if stale.name != name:
            stale.unlink(missing_ok=True)
    return folder / STATE


def saved_epoch(folder: str | Path) -> int:
    """The last epoch whose state `folder` holds (reads state.json only; the tensors are checked on load)."""
    return int(_read_record(Path(folder))["epoch"])


def load_train_state(folder: str | Path, parts: TrainingParts, data_fingerprint: str) -> RunSoFar:
    """Put the state saved in `folder` back into `parts` and the global generators; returns the run so far.

    Refuses, with a PneumoError, a state that is damaged, does not belong with its state.json,
    was trained on other data or another kind of device, or does not fit the model.
    """
    folder = Path(folder)
    record = _read_record(folder)
    tensors = _read_tensors(folder, record)
    if record["data_fingerprint"] != data_fingerprint:
        raise PneumoError(
            f"the images found now differ from those the run in {folder} was trained on (another data folder, "
            "or files added, removed or edited); resume from the folder the run was started in, with the same data"
        )
    if record["device"] != parts.device.type:
        raise PneumoError(
            f"the run in {folder} trained on {record['device']} but would continue on {parts.device.type}; "
            f"resume it on a machine with a {record['device']} device so it continues as it began"
        )
    try:
        _restore(parts, record, tensors)
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PneumoError(
            f"the training state in {folder} does not fit this model and recipe ({first}); it was saved by another version of pneumo or another config"
        ) from None
    return RunSoFar(int(record["epoch"]), record["history"], float(record["best_score"]), int(record["best_epoch"]))


def _tensors(parts: TrainingParts) -> dict[str, torch.Tensor]:
    """Every tensor of the state under a flat dotted key, on the CPU and contiguous as safetensors needs."""
    tensors = {f"model.{k}": v for k, v in parts.model.state_dict().items()}
    if parts.ema is not None:
        tensors |= {f"ema.{k}": v for k, v in parts.ema.state_dict().items()}
    for index, per_param in parts.optimizer.state_dict()["state"].items():
        tensors |= {f"optimizer.{index}.{k}": v for k, v in per_param.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if parts.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(parts.device)
    tensors |= {f"rng.{name}": g.get_state() for name, g in parts.generators.items()}
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _restore(parts: TrainingParts, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    def section(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    parts.model.load_state_dict(section("model."), strict=True)
    if parts.ema is not None:
        parts.ema.load_state_dict(section("ema."), strict=True)
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in section("optimizer.").items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    # the groups' hyperparameters come from the config (checked to be the run's); only lr moves
    groups = [{**group, "lr": lr} for group, lr in zip(parts.optimizer.state_dict()["param_groups"], record["optimizer_lr"], strict=True)]
    parts.optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    _match_parameter_layouts(parts.optimizer)
    parts.scheduler.load_state_dict(record["scheduler"])
    for name, generator in parts.generators.items():
        generator.set_state(tensors[f"rng.{name}"])
    torch.set_rng_state(tensors["rng.torch"])
    if parts.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], parts.device)


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give per-parameter state its parameter's memory layout (channels_last), as a fresh run has it."""
    for param, state in optimizer.state.items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / STATE
    if not path.exists():
        raise PneumoError(
            f"{folder} holds no training state ({STATE}): the run was stopped before its first epoch ended, "
            "or was made by a pneumo without resume; train it again from the start (--overwrite)"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PneumoError(f"{path} is not readable JSON ({exc}); train the run again from the start (--overwrite)") from None
    if record.get("format_version") != STATE_FORMAT_VERSION:
        raise PneumoError(
            f"{path}: training state format {record.get('format_version')!r} is not supported (expected {STATE_FORMAT_VERSION}); resume with the pneumo version that started the run"
        )
    return record


def _read_tensors(folder: Path, record: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensor file state.json names, checked against its checksum and epoch."""
    path = folder / str(record["tensors"])
    broken = f"the training state in {folder} is incomplete or damaged"
    if not path.exists():
        raise PneumoError(f"{broken}: {STATE} names {path.name}, which is missing; train the run again from the start (--overwrite)")
    if sha256_file(path) != record["tensors_sha256"]:
        raise PneumoError(f"{broken}: {path.name} does not match the checksum in {STATE}; train the run again from the start (--overwrite)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            epoch = (fh.metadata() or {}).get("epoch")
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise PneumoError(f"{broken}: {path.name} is unreadable ({exc})") from None
    if epoch != str(record["epoch"]):
        raise PneumoError(
            f"{broken}: {path.name} holds epoch {epoch} but {STATE} says epoch {record['epoch']}; train the run again from the start (--overwrite)"
        )
    return tensors


def _committed_tensor_file(folder: Path) -> str | None:
    """The tensor file the current state.json names, if there is a readable one."""
    try:
        return str(json.loads((folder / STATE).read_text())["tensors"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
