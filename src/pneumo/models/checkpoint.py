"""Checkpoints on disk: `weights.safetensors` + `meta.json` in one folder. Loading never unpickles.

The metadata (`pneumo.models.meta.CheckpointMeta`) says everything needed to rebuild and use
the model and how it came to be. It carries the weights' checksum (and the input check's,
`features.safetensors`, when there is one) and a checksum of itself over all of that
(`meta_sha256`), so an edited threshold, task or normalisation, or weights swapped in with a
recomputed `weights_sha256`, is refused rather than silently changing every answer. Only the
writers here make a folder (`save_checkpoint`, `write_meta`, `copy_checkpoint`); `pneumo train`,
`pneumo calibrate` and `pneumo ensemble` write through them. A model to predict with is
`pneumo.inference.torch_backend.TorchModel.load`, built on `read_checkpoint` here.

A folder in the first format (no metadata checksum) is refused with the way to re-save it:
`pneumo models upgrade FOLDER` (`upgrade_checkpoint`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pneumo.errors import PneumoError
from pneumo.models.ensemble import ENSEMBLE, build_ensemble
from pneumo.models.meta import FEATURES, FORMAT_VERSION, META, WEIGHTS, WRITTEN_BY_PNEUMO, CheckpointMeta
from pneumo.models.registry import create_model, list_models
from pneumo.utils.atomic import atomic_write, write_temp
from pneumo.utils.hashing import sha256_file
from pneumo.utils.reading import read_json

__all__ = [
    "save_checkpoint",
    "write_meta",
    "copy_checkpoint",
    "resolve_checkpoint",
    "read_meta",
    "read_checkpoint",
    "checkpoint_epoch",
    "upgrade_checkpoint",
    "known_architectures",
]


def known_architectures() -> set[str]:
    """The architectures a checkpoint may name: the model registry's and "ensemble"."""
    return {*list_models(), ENSEMBLE}


def save_checkpoint(folder: str | Path, net: nn.Module, meta: CheckpointMeta) -> Path:
    """Write weights and metadata atomically: a crash mid-write leaves the previous checkpoint intact.

    The metadata is validated first (a checkpoint that could not be loaded is never written)."""
    folder = Path(folder)
    meta.validate(f"the metadata for {folder}", known_architectures())
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    bad = _non_finite(state)
    if bad:
        raise PneumoError(f"the network to save in {folder} has non-finite numbers (NaN or inf) in {bad}; nothing was written")
    weights_tmp = meta_tmp = None
    try:
        weights_tmp = write_temp(folder / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
        record = meta.replace(weights_sha256=sha256_file(weights_tmp), features_sha256="").record(f"the metadata for {folder}")
        meta_tmp = write_temp(folder / META, json.dumps(record, indent=2))
    except (OSError, PneumoError) as exc:  # a full disk, a lost mount: nothing in the folder has changed yet
        for tmp in (weights_tmp, meta_tmp):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        if isinstance(exc, PneumoError):
            raise
        raise PneumoError(
            f"could not write a checkpoint to {folder} ({exc.strerror or exc}); the checkpoint already there is intact"
        ) from None
    (folder / FEATURES).unlink(missing_ok=True)  # statistics of the weights about to be replaced
    os.replace(weights_tmp, folder / WEIGHTS)
    os.replace(meta_tmp, folder / META)
    return folder


def write_meta(folder: str | Path, meta: CheckpointMeta) -> Path:
    """Replace a checkpoint's metadata (a new threshold or temperature) without touching its weights.

    The only way to change a model folder's metadata: it is validated, its weights' checksum
    must still match the weights, the input check beside them (if any) must be theirs, and the
    record is written with its new checksums (`features_sha256`, `meta_sha256`).

    Example:
        >>> write_meta(folder, read_meta(folder).replace(threshold=0.4))
    """
    folder = Path(folder)
    where = f"the metadata for {folder}"
    if meta.weights_sha256 != sha256_file(folder / WEIGHTS):
        raise PneumoError(
            f"the metadata for {folder} names other weights than {folder / WEIGHTS}; write the checkpoint whole with save_checkpoint"
        )
    features = ""
    if (folder / FEATURES).exists():
        tied = _features_weights_sha256(folder / FEATURES)
        if tied != meta.weights_sha256:
            raise PneumoError(f"{folder / FEATURES} was fitted for other weights than {folder / WEIGHTS}: refit or delete it")
        features = sha256_file(folder / FEATURES)
    record = meta.replace(features_sha256=features).record(where, known_architectures())
    atomic_write(folder / META, json.dumps(record, indent=2))
    return folder


def _features_weights_sha256(path: Path) -> str | None:
    """The weights checksum an input-check file says it was fitted for (its safetensors header), or None."""
    try:
        with safe_open(str(path), framework="np") as fh:
            return (fh.metadata() or {}).get("weights_sha256")
    except (SafetensorError, OSError, ValueError):
        return None


def copy_checkpoint(source: str | Path, folder: str | Path) -> Path:
    """Copy a checkpoint folder's files, each atomically, without serialising the weights again."""
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FEATURES).unlink(missing_ok=True)
    names = [WEIGHTS, META] + ([FEATURES] if (source / FEATURES).exists() else [])
    for name in names:  # weights first: a crash in between leaves meta's checksums refusing the mix
        os.replace(write_temp(folder / name, (source / name).read_bytes()), folder / name)
    return folder


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


def _read_values(folder: Path) -> object:
    return read_json(folder / META, WRITTEN_BY_PNEUMO)


def read_meta(folder: Path) -> CheckpointMeta:
    """A checkpoint folder's metadata through the one validator (`CheckpointMeta.load`): format
    version, checksum, every field's type, range and agreement with the others."""
    return CheckpointMeta.load(_read_values(Path(folder)), str(Path(folder) / META), known_architectures())


def checkpoint_epoch(folder: Path) -> int | None:
    """The epoch a checkpoint folder holds, or None when it has none (or no readable metadata)."""
    try:
        return read_meta(folder).epoch
    except PneumoError:
        return None


def _build(meta: CheckpointMeta) -> nn.Module:
    """A fresh network of the checkpoint's architecture, to load its weights into."""
    if meta.architecture == ENSEMBLE:
        return build_ensemble(meta.members, meta.task, meta.image_size)
    return create_model(meta.architecture, num_outputs=meta.num_outputs, image_size=meta.image_size, dropout=meta.dropout, crop=meta.crop)


def _load_weights(folder: Path, meta: CheckpointMeta) -> nn.Module:
    """The network the metadata describes with the folder's weights in it; every tensor's name and shape must fit."""
    net = _build(meta)
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PneumoError(f"{folder / WEIGHTS} is not readable ({first}): the file is damaged") from None
    expected = net.state_dict()
    what = f"a {meta.architecture} {meta.task} model ({meta.num_outputs} output(s), {meta.image_size} px)"
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        raise PneumoError(f"{folder / WEIGHTS} does not fit {what}: {'it lacks' if missing else 'it has unexpected'} {names}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise PneumoError(
                f"{folder / WEIGHTS} does not fit {what}: {name} is {list(state[name].shape)} in the file, {list(tensor.shape)} in the model"
            )
    bad = _non_finite(state)
    if bad:
        raise PneumoError(f"{folder / WEIGHTS} holds non-finite numbers (NaN or inf) in {bad}: the model is damaged; train it again")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PneumoError(f"{folder / WEIGHTS} does not fit {what}: {first}") from None
    return net


def _non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The first tensor of a state dict holding NaN or inf, or None: such weights make every probability NaN."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta, Path]:
    """Rebuild a network from a checkpoint, checking its metadata and weights before use.

    Returns the network (eval mode, channels-last, on `device`), its metadata and the folder.
    """
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    if sha256_file(folder / WEIGHTS) != meta.weights_sha256:
        raise PneumoError(
            f"{folder / WEIGHTS} does not match the checksum in {META}: the file is damaged or was replaced; {WRITTEN_BY_PNEUMO}"
        )
    if meta.features_sha256:
        if not (folder / FEATURES).exists():
            raise PneumoError(f"{folder / FEATURES}, the input check {META} records, is missing; restore it or make the model folder again")
        if sha256_file(folder / FEATURES) != meta.features_sha256:
            raise PneumoError(
                f"{folder / FEATURES} does not match the checksum in {META}: the file is damaged or was replaced; refit it or restore it"
            )
    net = _load_weights(folder, meta)
    return net.to(device, memory_format=torch.channels_last).eval(), meta, folder


def upgrade_checkpoint(path: str | Path) -> Path:
    """Re-save a checkpoint folder of format 1 (no metadata checksum) in the current format.

    Only a folder whose weights still match its recorded `weights_sha256`, whose every field
    passes validation and whose weights load into the network it describes is re-saved; the
    weights are not touched. A folder already current is checked and left as it is.
    """
    folder = resolve_checkpoint(path)
    values = _read_values(folder)
    where = str(folder / META)
    if isinstance(values, dict) and values.get("format_version") == FORMAT_VERSION:
        read_checkpoint(folder)
        return folder
    if not isinstance(values, dict) or values.get("format_version") != 1:
        found = values.get("format_version") if isinstance(values, dict) else None
        raise PneumoError(f"{where}: checkpoint format {found!r} cannot be upgraded (only format 1 can)")
    if not values.get("weights_sha256"):
        raise PneumoError(
            f"{where} has no weights checksum, so its weights cannot be shown to be the ones it describes: train the model again"
        )
    meta = CheckpointMeta.from_dict({k: v for k, v in values.items() if k != "format_version"}, where, known_architectures())
    if sha256_file(folder / WEIGHTS) != meta.weights_sha256:
        raise PneumoError(
            f"{folder / WEIGHTS} does not match the checksum in {META}: the file is damaged or was replaced; train the model again"
        )
    _load_weights(folder, meta)
    write_meta(folder, meta)
    return folder
