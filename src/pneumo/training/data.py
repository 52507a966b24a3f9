"""A run's data: records -> train/val split -> decoded once into the cache -> tensors on the training device."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pneumo.config import Config
from pneumo.data.cache import decode_dataset
from pneumo.data.layout import Record, discover
from pneumo.data.split import shared_patients, split_records, subsample, write_split
from pneumo.errors import PneumoError
from pneumo.tasks import get_task
from pneumo.training import distributed as dist

__all__ = ["TrainingData", "split_seed", "training_records", "split_training_records", "load_training_data"]


@dataclass
class TrainingData:
    """The split a run learns and validates on, decoded, with targets for the config's task."""

    train: list[Record]
    val: list[Record]
    x_train: torch.Tensor  # uint8 [N, S, S] on the training device
    y_train: torch.Tensor  # class indices on the training device
    x_val: torch.Tensor  # uint8 on the training device
    y_val: np.ndarray  # class indices
    fingerprint: str  # hash of every image's bytes, in order: a resumed run must see the same

    @property
    def n_train(self) -> int:
        return len(self.train)


def split_seed(config: Config) -> int:
    """The seed that draws the validation split: `split_seed`, or `seed` when it is -1."""
    return config.seed if config.split_seed < 0 else config.split_seed


def training_records(config: Config) -> list[Record]:
    """The images the run learns from (before the validation split)."""
    dataset = discover(config.data)
    if dataset.layout == "kaggle" or len(dataset.splits) > 1:
        records = list(dataset.split(config.train_split))
        if config.merge_val and "val" in dataset.splits and config.train_split != "val":
            records += dataset.splits["val"]
    else:
        records = list(dataset.split(None))
    if config.task == "pathogen":
        unknown = [r for r in records if r.label == "PNEUMONIA" and r.pathogen is None]
        if unknown:
            raise PneumoError(f"{len(unknown)} pneumonia images have no bacteria/virus in their name or manifest (e.g. {unknown[0].path}); the pathogen task needs it")
    labels = sorted({r.label for r in records})
    if len(labels) == 1:
        raise PneumoError(f"{config.data} holds a single class (only {labels[0]} images); training needs both NORMAL and PNEUMONIA images")
    return subsample(records, config.limit, split_seed(config), config.task)


def split_training_records(config: Config) -> tuple[list[Record], list[Record]]:
    """The run's train and validation records, as `split_seed` draws them."""
    return split_records(training_records(config), config.val_fraction, split_seed(config), config.split, config.task)


def decode_training_data(
    config: Config, train: list[Record], val: list[Record], device: torch.device, progress: bool, log: Callable[[str], None]
) -> TrainingData:
    """Decode the split (unreadable images leave it, named in the log) and move it to `device`."""
    with dist.local_main_first():  # one process per machine decodes; its others read the cache it wrote
        dataset = decode_dataset(train + val, config.image_size, config.cache_dir or None, config.workers, progress, config.strict)
    if dataset.skipped:  # unreadable files leave the split they were drawn into
        unreadable = {path for path, _ in dataset.skipped}
        train = [r for r in train if str(r.path) not in unreadable]
        val = [r for r in val if str(r.path) not in unreadable]
        log(f"skipped {len(dataset.skipped)} unreadable images (strict=true makes this an error): " + "; ".join(m for _, m in dataset.skipped[:5]))
    if not train or not val:
        raise PneumoError("after skipping unreadable images, the training or validation split is empty; check the data")
    task = get_task(config.task)
    y_all = np.array([r.target(task) for r in train + val])
    n = len(train)
    return TrainingData(
        train,
        val,
        torch.from_numpy(dataset.images[:n]).to(device),
        torch.from_numpy(y_all[:n]).to(device),
        torch.from_numpy(dataset.images[n:]).to(device),
        y_all[n:],
        dataset.fingerprint,
    )


def load_training_data(config: Config, run_dir: Path, device: torch.device, write: bool, progress: bool, log: Callable[[str], None]) -> TrainingData:
    """Split, decode (once per machine under torchrun) and move to `device`; with `write`, record the split in split.csv."""
    train, val = split_training_records(config)
    data = decode_training_data(config, train, val, device, progress, log)
    if write:
        write_split(run_dir / "split.csv", {"train": data.train, "val": data.val})
    y_all = np.concatenate([data.y_train.cpu().numpy(), data.y_val])
    log(
        f"data: {data.n_train} train / {len(data.val)} val images ({config.split} split, "
        f"{len(shared_patients(data.train, data.val))} patients on both sides); pneumonia share {np.mean(y_all > 0):.2f}; device {device}"
    )
    return data
