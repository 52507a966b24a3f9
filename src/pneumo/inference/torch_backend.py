"""Prediction with a PyTorch checkpoint: the network, its metadata and, optionally, the input
check fitted on its features.

Example:
    >>> model = TorchModel.load("runs/seed")          # a run folder, or runs/seed/model
    >>> model.pneumonia_probability(images)           # uint8 [N, S, S] at model.image_size
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumo.data.preprocess import check_image_batch, normalise
from pneumo.inference.base import Model
from pneumo.inference.checks import FeatureCheck
from pneumo.inference.features import FeatureTap, feature_width, load_feature_check
from pneumo.models.checkpoint import read_checkpoint
from pneumo.models.meta import CheckpointMeta
from pneumo.tasks import Task
from pneumo.utils.progress import progress_bar

__all__ = ["TorchModel", "class_probabilities", "feature_rows", "load_checkpoint", "net_lock"]

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def net_lock(net: nn.Module) -> threading.RLock:
    """The lock every pass through `net` that attaches hooks (the feature tap, Grad-CAM) holds:
    one network shared by threads (a web app, a thread pool) gets one such pass at a time, so no
    thread's hooks see another's images. Keyed by the network, not the model object, because
    models made from one another (`with_feature_check`) share their network."""
    with _LOCKS_LOCK:
        lock = _LOCKS.get(net)
        if lock is None:
            lock = _LOCKS[net] = threading.RLock()
        return lock


@dataclass
class TorchModel(Model):
    """A network in eval mode with the metadata that says how to feed it and read it.

    Args:
        net: the network.
        meta: its checkpoint metadata.
        folder: where it was loaded from (its input check lives there too).
        check: the input check fitted on its features (`pneumo.inference.features`); with it,
            every prediction also scores each input against it.
    """

    net: nn.Module
    meta: CheckpointMeta
    folder: Path | None = None
    check: FeatureCheck | None = None

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TorchModel:
        """Rebuild a model from a checkpoint (run folder, checkpoint folder or one of its files), checked before use."""
        net, meta, folder = read_checkpoint(path, device)
        return cls(net, meta, folder)

    @property
    def feature_check(self) -> FeatureCheck | None:
        return self.check

    def class_probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """uint8 [N, S, S] images at the model's size -> probabilities [N, n_classes]."""
        images = check_image_batch(images, self.image_size, keep_tensors=True)  # validation films stay on their device
        with net_lock(self.net):  # eval mode is set and restored around the pass: one thread at a time
            return class_probabilities(
                self.net,
                images,
                self.task,
                self.meta.mean,
                self.meta.std,
                batch_size,
                progress,
                self.meta.temperature,
                self.meta.logit_offset,
            )

    def probabilities_and_scores(
        self, images: np.ndarray, batch_size: int = 256, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.check is None:
            return self.class_probabilities(images, batch_size, progress), None
        probs, rows = feature_rows(self, images, batch_size, progress)
        return probs, self.check.scores(rows)

    @property
    def checkpoint(self) -> Path | None:  # type: ignore[override]
        return self.folder

    def with_feature_check(self) -> TorchModel:
        """The model with its checkpoint's input check attached, where it has one (the bundled
        model does); otherwise as it is, and only the rule checks warn."""
        if self.check is not None or self.folder is None:
            return self
        check = load_feature_check(self.folder)
        return dataclasses.replace(self, check=check) if check is not None else self


# On a CPU, small batches keep a network's activations in cache (`python benchmarks/bench_eval_batch.py`
# finds the fastest batch per input size), so the batch is sized by pixels; a GPU takes the
# caller's batch whole.
CPU_BATCH_PIXELS = 16 * 128 * 128


def cpu_batch_size(side: int) -> int:
    """Films of `side` x `side` pixels per CPU inference batch: CPU_BATCH_PIXELS, 4 to 16 films."""
    return max(4, min(16, CPU_BATCH_PIXELS // max(1, side * side)))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> TorchModel:
    """`TorchModel.load`: a checkpoint as a model to predict with."""
    return TorchModel.load(path, device)


@torch.inference_mode()
def class_probabilities(
    net: nn.Module,
    images: np.ndarray | torch.Tensor,
    task: Task,
    mean: float,
    std: float,
    batch_size: int = 256,
    progress: bool = False,
    temperature: float = 1.0,
    logit_offset: float = 0.0,
) -> np.ndarray:
    """Run a network in eval mode over uint8 [N, S, S] images -> probabilities [N, n_classes]
    (logits divided by the calibration `temperature`, `logit_offset` added to pneumonia's log-odds)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    images = torch.as_tensor(images)
    if device.type == "cpu":
        batch_size = min(batch_size, cpu_batch_size(images.shape[-1]))
    out = []
    starts = range(0, len(images), batch_size)
    for start in progress_bar(starts, len(starts), "predicting", progress):
        x = normalise(images[start : start + batch_size].to(device), mean, std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = net(x).float()
        out.append(task.probabilities(logits, temperature, logit_offset).cpu())
    net.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, len(task.classes)), dtype=np.float32)


def feature_rows(
    model: TorchModel, images: np.ndarray | torch.Tensor, batch_size: int = 256, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One pass through `TorchModel.class_probabilities`: its probabilities and every image's feature row ([N, D] float64)."""
    with net_lock(model.net), FeatureTap(model.net) as tap:
        probs = model.class_probabilities(images, batch_size, progress)
    rows = torch.cat([r.cpu() for r in tap.rows]).double().numpy() if tap.rows else np.zeros((0, feature_width(model.net)))
    return probs, rows
