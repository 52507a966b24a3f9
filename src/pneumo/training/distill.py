"""Learning from a teacher network as well as from the labels (knowledge distillation, Hinton et al. 2015).

A student trained on the labels alone learns what one-hot targets say; a teacher's calibrated
probabilities also say how sure a better model is of each film, and which films are hard. The
teacher's answer must be for the same view of the film the student sees, so the augmentation is
drawn once: each training film under `distill_views` fixed augmentations of the recipe (seed 0,
at the teacher's input size), the teacher's probabilities for each (temperature included), and
the views resized to the student's size. Views and answers are computed once per teacher, training
set and recipe, and cached beside the decoded images at the teacher's size: students of several
seeds and sizes then cost one teacher pass in all. In epoch e the student sees film i's view (e + i) mod V.

Example:
    >>> cfg = load_config("cpu", ["teacher=bundled"])
    >>> train(cfg, out="runs/cpu-distilled")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pneumo.config import Config
from pneumo.data.augment import augment_batch
from pneumo.data.cache import cache_dir, decode_dataset, usable_cache
from pneumo.errors import PneumoError
from pneumo.evaluation.overlap import training_overlap
from pneumo.inference.loading import load_model
from pneumo.inference.torch_backend import TorchModel
from pneumo.training.data import TrainingData
from pneumo.utils.atomic import write_temp
from pneumo.utils.progress import progress_bar

__all__ = ["Distillation", "distillation_data", "load_teacher"]

logger = logging.getLogger(__name__)

_FORMAT = "pneumo-teacher-views/1"
_CHUNK = 64  # films augmented and answered at once


@dataclass
class Distillation:
    """The teacher's answers on fixed views of every training film, and how much they weigh."""

    views: torch.Tensor  # uint8 [V, N, S, S] at the student's size, on its device
    probabilities: torch.Tensor  # float [V, N, n_classes], the teacher's calibrated probabilities per view
    weight: float
    temperature: float
    teacher: str  # what the teacher is: its folder (or "bundled") and metadata checksum
    threshold: float  # the teacher's decision threshold, for `threshold: teacher`

    def batch(self, epoch: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Films `idx`'s views for `epoch` (view (epoch + i) mod V of film i), and the teacher's probabilities for them."""
        view = (idx + epoch) % self.views.shape[0]
        return self.views[view, idx], self.probabilities[view, idx]

    def summary(self) -> dict[str, object]:
        return {
            "teacher": self.teacher,
            "views": int(self.views.shape[0]),
            "weight": self.weight,
            "temperature": self.temperature,
            "teacher_threshold": self.threshold,
        }


def load_teacher(name: str, task: str) -> TorchModel:
    """The teacher a config names ("bundled", or a run or model folder) as a PyTorch model of the same task."""
    teacher = load_model(None if name == "bundled" else name, backend="torch")
    if not isinstance(teacher, TorchModel):
        raise PneumoError(f"teacher {name!r} is not a PyTorch checkpoint; give a run or model folder, or bundled")
    if teacher.meta.task != task:
        raise PneumoError(f"teacher {name!r} is a {teacher.meta.task} model; a {task} student needs a teacher of its own task")
    return teacher


def _refuse_a_teacher_of_the_validation_films(teacher: TorchModel, config: Config, data: TrainingData) -> None:
    """A teacher that trained on the run's validation films knows their labels: its answers would
    carry them into training, and validation (the threshold, the calibration, the signal) would be
    optimistic. Refused, saying which split the teacher used."""
    overlap = training_overlap(teacher.folder, data.val, config.cache_dir or None)
    if overlap and overlap["train"]:
        split_seed = teacher.meta.config.get("split_seed") if isinstance(teacher.meta.config, dict) else None
        hint = f"--set split_seed={split_seed}" if isinstance(split_seed, int) and split_seed >= 0 else "the teacher's split"
        raise PneumoError(
            f"the teacher {config.teacher} trained on {overlap['train']} of this run's {overlap['n']} validation films: its answers "
            f"would carry their labels into training and make validation optimistic; validate on films it never trained on ({hint})"
        )


def _key(teacher: TorchModel, fingerprint: str, config: Config) -> str:
    recipe = {
        "format": _FORMAT,
        "teacher": teacher.meta.meta_sha256 or teacher.meta.weights_sha256,
        "films": fingerprint,
        "augment": asdict(config.augment),
        "views": config.distill_views,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:24]


def _views_and_answers(teacher: TorchModel, films: np.ndarray, config: Config, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """V augmented views of every film at the teacher's size, and the teacher's probabilities for them."""
    n, views = len(films), config.distill_views if config.augment.enabled else 1
    out_views = np.empty((views, n, *films.shape[1:]), dtype=np.uint8)
    out_probs = np.empty((views, n, len(teacher.classes)), dtype=np.float32)
    generator = torch.Generator().manual_seed(0)  # the same views whatever the student's seed: one cache for every seed
    chunks = [(v, start) for v in range(views) for start in range(0, n, _CHUNK)]
    for v, start in progress_bar(chunks, len(chunks), "teacher on fixed views", progress):
        x = torch.from_numpy(films[start : start + _CHUNK]).unsqueeze(1).float().div_(255)
        x = augment_batch(x, config.augment, generator) if config.augment.enabled else x
        pixels = x.mul(255).round().clamp_(0, 255).to(torch.uint8)[:, 0].numpy()
        out_probs[v, start : start + len(x)] = teacher.class_probabilities(pixels)
        out_views[v, start : start + len(x)] = pixels
    return out_views, out_probs


def _resized(views: np.ndarray, size: int) -> np.ndarray:
    """uint8 views [V, N, S, S] at `size` a side (antialiased), a chunk at a time."""
    if views.shape[-1] == size:
        return np.ascontiguousarray(views)
    out = np.empty((*views.shape[:2], size, size), dtype=np.uint8)
    for v in range(views.shape[0]):
        for start in range(0, views.shape[1], 512):
            x = torch.from_numpy(np.array(views[v, start : start + 512])).unsqueeze(1).float()  # a copy: the cache is read-only
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out[v, start : start + len(x)] = x.round().clamp_(0, 255).to(torch.uint8)[:, 0].numpy()
    return out


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # np.save on a name would add ".npy" to the temporary file's
        np.save(fh, array)


def distillation_data(config: Config, data: TrainingData, device: torch.device, progress: bool) -> Distillation | None:
    """The teacher's answers for the run's training films (None when the config names no teacher), from the cache when there."""
    if config.teacher == "none":
        return None
    teacher = load_teacher(config.teacher, config.task)
    _refuse_a_teacher_of_the_validation_films(teacher, config, data)
    films = decode_dataset(data.train, teacher.image_size, config.cache_dir or None, config.workers, progress=progress)
    if len(films.records) != len(data.train):
        raise PneumoError("some training films could not be read at the teacher's size; check the data")
    key = _key(teacher, films.fingerprint, config)
    folder = cache_dir(config.cache_dir or None)
    views_path, probs_path = folder / f"teacher-{key}-views.npy", folder / f"teacher-{key}-probabilities.npy"
    try:
        views, probs = np.load(views_path, mmap_mode="r"), np.load(probs_path)
        logger.info(f"teacher {config.teacher}: its answers on {views.shape[0]} fixed views of {views.shape[1]} films from the cache")
    except (OSError, ValueError):
        logger.info(
            f"teacher {config.teacher}: answering for {config.distill_views if config.augment.enabled else 1} fixed views of {len(films.records)} training films (once; cached)"
        )
        views, probs = _views_and_answers(teacher, films.images, config, progress)
        if usable_cache(config.cache_dir or None):
            for path, array in ((views_path, views), (probs_path, probs)):
                os.replace(write_temp(path, lambda tmp, a=array: _save(tmp, a)), path)
    name = config.teacher if config.teacher == "bundled" else str(Path(config.teacher))
    return Distillation(
        torch.from_numpy(_resized(views, config.image_size)).to(device),
        torch.from_numpy(np.asarray(probs)).to(device),
        config.distill_weight,
        config.distill_temperature,
        f"{name} ({teacher.meta.architecture}, meta {teacher.meta.meta_sha256[:12]})",
        teacher.threshold,
    )
