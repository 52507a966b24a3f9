"""Checkpoints: `weights.safetensors` + `meta.json` in one folder. Loading never unpickles.

The metadata says everything needed to rebuild and use the model (architecture, input
size, normalisation, classes, decision threshold) and how it came to be (config, data
fingerprint, validation metrics, package version); a checksum guards the weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pneumo.data.layout import CLASSES, PATHOGEN_CLASSES
from pneumo.errors import PneumoError
from pneumo.models import create_model, model_spec
from pneumo.preprocess import normalise
from pneumo.progress import progress_bar
from pneumo.runtime import ModelMetadata

__all__ = ["FORMAT_VERSION", "LoadedModel", "class_probabilities", "copy_checkpoint", "save_checkpoint", "load_checkpoint", "resolve_checkpoint", "task_classes"]

FORMAT_VERSION = 1
WEIGHTS, META = "weights.safetensors", "meta.json"
FEATURES = "features.safetensors"  # optional: training-feature statistics (pneumo.feature_stats)


def task_classes(task: str) -> list[str]:
    """Output classes of a task, in logit order."""
    return list(CLASSES) if task == "binary" else list(PATHOGEN_CLASSES)


@dataclass
class LoadedModel(ModelMetadata):
    """A network in eval mode with the metadata that says how to feed it and read it."""

    net: nn.Module
    meta: dict[str, Any]
    folder: Path | None = None  # where it was loaded from (its feature statistics live there too)

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    def class_probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """uint8 [N, S, S] images at the model's size -> probabilities [N, n_classes]."""
        return class_probabilities(self.net, images, self.task, self.meta["mean"], self.meta["std"], batch_size, progress)


@torch.inference_mode()
def class_probabilities(
    net: nn.Module,
    images: np.ndarray | torch.Tensor,
    task: str,
    mean: float,
    std: float,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """Run a network in eval mode over uint8 [N, S, S] images -> probabilities [N, n_classes]."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    images = torch.as_tensor(images)
    out = []
    starts = range(0, len(images), batch_size)
    for start in progress_bar(starts, len(starts), "predicting", progress):
        x = normalise(images[start : start + batch_size].to(device), mean, std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = net(x).float()
        out.append(logits_to_probabilities(logits, task).cpu())
    net.train(was_training)
    n_classes = 2 if task == "binary" else 3
    return torch.cat(out).numpy() if out else np.zeros((0, n_classes), dtype=np.float32)


def logits_to_probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """[B, 1] logits -> [B, 2] (binary) or [B, 3] logits -> softmax (pathogen)."""
    if task == "binary":
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(folder: str | Path, net: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights and metadata atomically: a crash mid-write leaves the previous checkpoint intact."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as tmp:
        pass
    weights_tmp, meta_tmp = Path(tmp.name), Path(tmp.name).with_suffix(".json.tmp")
    try:
        save_file(state, str(weights_tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(weights_tmp, 0o666 & ~umask)  # temporary files are private (0600); a checkpoint is shared like any file
        meta = {**meta, "format_version": FORMAT_VERSION, "weights_sha256": _sha256(weights_tmp)}
        meta_tmp.write_text(json.dumps(meta, indent=2, default=_jsonable))
    except OSError as exc:  # a full disk, a lost mount: nothing in the folder has changed yet
        weights_tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
        raise PneumoError(f"could not write a checkpoint to {folder} ({exc.strerror or exc}); the checkpoint already there is intact") from None
    (folder / FEATURES).unlink(missing_ok=True)  # statistics of the weights about to be replaced
    os.replace(weights_tmp, folder / WEIGHTS)
    os.replace(meta_tmp, folder / META)
    return folder


def copy_checkpoint(source: str | Path, folder: str | Path) -> Path:
    """Copy a checkpoint folder's files, each atomically, without serialising the weights again."""
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FEATURES).unlink(missing_ok=True)
    names = [WEIGHTS, META] + ([FEATURES] if (source / FEATURES).exists() else [])
    for name in names:  # weights first: a crash in between leaves meta's checksum refusing the mix
        tmp = folder / f".{name}.tmp"
        shutil.copyfile(source / name, tmp)
        os.replace(tmp, folder / name)
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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a model from a checkpoint, checking its metadata and weights before use.

    Example:
        >>> model = load_checkpoint("runs/seed")   # a run folder, or runs/seed/model
        >>> model.pneumonia_probability(images)
    """
    folder = resolve_checkpoint(path)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as exc:
        raise PneumoError(f"{folder / META} is not readable JSON ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise PneumoError(f"{folder}: checkpoint format {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    required = ("architecture", "task", "classes", "image_size", "mean", "std", "threshold", "num_outputs")
    missing = [k for k in required if k not in meta]
    if missing:
        raise PneumoError(f"{folder / META} lacks {', '.join(missing)}")
    model_spec(meta["architecture"])  # raises for an unknown architecture
    if meta.get("weights_sha256") and _sha256(folder / WEIGHTS) != meta["weights_sha256"]:
        raise PneumoError(f"{folder / WEIGHTS} does not match the checksum in {META}: the file is damaged")
    net = create_model(meta["architecture"], num_outputs=int(meta["num_outputs"]), image_size=int(meta["image_size"]), dropout=float(meta.get("dropout", 0.0)))
    try:
        state = load_file(str(folder / WEIGHTS))
        net.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PneumoError(f"{folder / WEIGHTS} does not fit a {meta['architecture']} model: {first}") from None
    return LoadedModel(net.to(device, memory_format=torch.channels_last).eval(), meta, folder)
