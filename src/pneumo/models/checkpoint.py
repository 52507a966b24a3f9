"""Checkpoints on disk: `weights.safetensors` + `meta.json` in one folder. Loading never unpickles.

The metadata (`pneumo.models.meta.CheckpointMeta`) says everything needed to rebuild and use
the model and how it came to be; a checksum in it guards the weights. A model to predict with
is `pneumo.inference.torch_backend.TorchModel.load`, built on `read_checkpoint` here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pneumo.errors import PneumoError
from pneumo.models.ensemble import ENSEMBLE, build_ensemble
from pneumo.models.meta import FEATURES, FORMAT_VERSION, META, WEIGHTS, CheckpointMeta
from pneumo.models.registry import create_model, model_spec
from pneumo.utils.files import atomic_write, sha256_file, write_temp

__all__ = ["save_checkpoint", "write_meta", "copy_checkpoint", "resolve_checkpoint", "read_meta", "read_checkpoint", "checkpoint_epoch"]


def save_checkpoint(folder: str | Path, net: nn.Module, meta: CheckpointMeta) -> Path:
    """Write weights and metadata atomically: a crash mid-write leaves the previous checkpoint intact."""
    folder = Path(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    weights_tmp = meta_tmp = None
    try:
        weights_tmp = write_temp(folder / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
        record = meta.replace(format_version=FORMAT_VERSION, weights_sha256=sha256_file(weights_tmp)).to_dict()
        meta_tmp = write_temp(folder / META, json.dumps(record, indent=2, default=_jsonable))
    except OSError as exc:  # a full disk, a lost mount: nothing in the folder has changed yet
        for tmp in (weights_tmp, meta_tmp):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        raise PneumoError(f"could not write a checkpoint to {folder} ({exc.strerror or exc}); the checkpoint already there is intact") from None
    (folder / FEATURES).unlink(missing_ok=True)  # statistics of the weights about to be replaced
    os.replace(weights_tmp, folder / WEIGHTS)
    os.replace(meta_tmp, folder / META)
    return folder


def write_meta(folder: str | Path, meta: CheckpointMeta) -> Path:
    """Replace a checkpoint's metadata (a new threshold or temperature) without touching its
    weights; the weights' checksum must still match them."""
    folder = Path(folder)
    if meta.weights_sha256 != sha256_file(folder / WEIGHTS):
        raise PneumoError(f"the metadata for {folder} names other weights than {folder / WEIGHTS}; write the checkpoint whole with save_checkpoint")
    atomic_write(folder / META, json.dumps(meta.replace(format_version=FORMAT_VERSION).to_dict(), indent=2, default=_jsonable))
    return folder


def copy_checkpoint(source: str | Path, folder: str | Path) -> Path:
    """Copy a checkpoint folder's files, each atomically, without serialising the weights again."""
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FEATURES).unlink(missing_ok=True)
    names = [WEIGHTS, META] + ([FEATURES] if (source / FEATURES).exists() else [])
    for name in names:  # weights first: a crash in between leaves meta's checksum refusing the mix
        os.replace(write_temp(folder / name, (source / name).read_bytes()), folder / name)
    return folder


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for a run folder (its `model/`), a checkpoint folder, or one of its files."""
    path = Path(path).expanduser()
    if path.is_file() and path.name in (WEIGHTS, META):
        path = path.parent
    if (path / "model" / META).exists():
        path = path / "model"
    if not (path / META).exists() or not (path / WEIGHTS).exists():
        raise PneumoError(f"{path} is not a pneumo checkpoint: expected a run folder or a folder with {WEIGHTS} and {META}")
    return path


def read_meta(folder: Path) -> CheckpointMeta:
    """A checkpoint folder's metadata, checked: format version, fields and their types."""
    try:
        values = json.loads((folder / META).read_text())
    except (OSError, ValueError) as exc:
        raise PneumoError(f"{folder / META} is not readable JSON ({exc})") from None
    if not isinstance(values, dict) or values.get("format_version") != FORMAT_VERSION:
        found = values.get("format_version") if isinstance(values, dict) else None
        raise PneumoError(f"{folder}: checkpoint format {found!r} is not supported (expected {FORMAT_VERSION})")
    return CheckpointMeta.from_dict(values, str(folder / META))


def checkpoint_epoch(folder: Path) -> int | None:
    """The epoch a checkpoint folder holds, or None when it has none (or no readable metadata)."""
    try:
        return read_meta(folder).epoch
    except PneumoError:
        return None


def _build(meta: CheckpointMeta) -> nn.Module:
    """A fresh network of the checkpoint's architecture, to load its weights into."""
    if meta.architecture == ENSEMBLE:
        if not meta.members:
            raise PneumoError("an ensemble checkpoint lists no members")
        return build_ensemble(meta.members, meta.task, meta.image_size)
    return create_model(meta.architecture, num_outputs=meta.num_outputs, image_size=meta.image_size, dropout=meta.dropout)


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta, Path]:
    """Rebuild a network from a checkpoint, checking its metadata and weights before use.

    Returns the network (eval mode, channels-last, on `device`), its metadata and the folder.
    """
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    if meta.architecture != ENSEMBLE:
        model_spec(meta.architecture)  # raises for an unknown architecture
    if meta.weights_sha256 and sha256_file(folder / WEIGHTS) != meta.weights_sha256:
        raise PneumoError(f"{folder / WEIGHTS} does not match the checksum in {META}: the file is damaged")
    net = _build(meta)
    try:
        net.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PneumoError(f"{folder / WEIGHTS} does not fit a {meta.architecture} model: {first}") from None
    return net.to(device, memory_format=torch.channels_last).eval(), meta, folder
