"""A run's data: records -> train/val split -> decoded once into the cache -> tensors on the training device."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pneumo.config import Config, config_from_dict, config_to_dict, load_config
from pneumo.data.cache import decode_dataset
from pneumo.data.layout import Record, discover
from pneumo.version import __version__
from pneumo.data.split import shared_patients, split_records, subsample, write_split
from pneumo.errors import PneumoError
from pneumo.tasks import get_task
from pneumo.training import distributed as dist
from pneumo.utils.walk import image_files

__all__ = [
    "OutlierFilms",
    "TrainingData",
    "load_training_data",
    "model_recipe",
    "outlier_films",
    "outlier_source",
    "split_seed",
    "split_training_records",
    "training_records",
]

logger = logging.getLogger(__name__)


def provenance(config: Config, data: TrainingData) -> dict[str, object]:
    """What a checkpoint records of where it came from: its data, its split's sizes, the versions."""
    return {
        "data_source": str(config.data),
        "data_fingerprint": data.fingerprint,
        "n_train": data.n_train,
        "n_val": len(data.val),
        "pneumo_version": __version__,
        "torch_version": torch.__version__,
    }


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


def model_recipe(config: dict, where: object, data: str | Path | None = None, outliers: str | Path | None = None) -> Config:
    """The recipe a model was trained with, from its metadata's `config` (an ensemble's: its members'), with
    `data` and `outliers` where the caller says: what draws its split again. An ensemble written before
    pneumo kept its members' recipe (its config lists only them) follows default.yaml, as the bundled one does."""
    if not config:
        raise PneumoError(f"{where} records no training config, so its validation split cannot be drawn again; train it with pneumo")
    values = dict(config)
    if values.pop("members", None) is not None and not values:
        values = config_to_dict(load_config("default"))
    if data is not None:
        values["data"] = str(data)
    if outliers is not None:
        values["outliers"] = str(outliers)
    return config_from_dict(values)


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
            raise PneumoError(
                f"{len(unknown)} pneumonia images have no bacteria/virus in their name or manifest (e.g. {unknown[0].path}); the pathogen task needs it"
            )
    labels = sorted({r.label for r in records})
    if len(labels) == 1:
        raise PneumoError(f"{config.data} holds a single class (only {labels[0]} images); training needs both NORMAL and PNEUMONIA images")
    return subsample(records, config.limit, split_seed(config), config.task)


def split_training_records(config: Config) -> tuple[list[Record], list[Record]]:
    """The run's train and validation records, as `split_seed` draws them."""
    return split_records(training_records(config), config.val_fraction, split_seed(config), config.split, config.task)


def decode_training_data(config: Config, train: list[Record], val: list[Record], device: torch.device, progress: bool) -> TrainingData:
    """Decode the split (unreadable images leave it, named in the log) and move it to `device`."""
    with dist.local_main_first():  # one process per machine decodes; its others read the cache it wrote
        dataset = decode_dataset(train + val, config.image_size, config.cache_dir or None, config.workers, progress, config.strict)
    if dataset.skipped:  # unreadable files leave the split they were drawn into
        unreadable = {path for path, _ in dataset.skipped}
        train = [r for r in train if str(r.path) not in unreadable]
        val = [r for r in val if str(r.path) not in unreadable]
        logger.info(
            f"skipped {len(dataset.skipped)} unreadable images (strict=true makes this an error): "
            + "; ".join(m for _, m in dataset.skipped[:5])
        )
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


def load_training_data(config: Config, run_dir: Path, device: torch.device, write: bool, progress: bool) -> TrainingData:
    """Split, decode (once per machine under torchrun) and move to `device`; with `write`, record the split in split.csv."""
    train, val = split_training_records(config)
    data = decode_training_data(config, train, val, device, progress)
    if write:
        write_split(run_dir / "split.csv", {"train": data.train, "val": data.val})
    y_all = np.concatenate([data.y_train.cpu().numpy(), data.y_val])
    logger.info(
        f"data: {data.n_train} train / {len(data.val)} val images ({config.split} split, "
        f"{len(shared_patients(data.train, data.val))} patients on both sides); pneumonia share {np.mean(y_all > 0):.2f}; device {device}"
    )
    return data


@dataclass
class OutlierFilms:
    """Films the model must not judge, decoded at its size, each with its source (see `outlier_source`)."""

    folder: Path
    images: np.ndarray  # uint8 [N, S, S]
    sources: list[str]


def outlier_source(path: Path) -> str:
    """The source a film came from, as far as its name tells: the outlier collection names the
    figures of one paper or case series with a common prefix (`1-s2.0-S0929664620300449-gr2_lrg-a.jpg`,
    `...-b.jpg`), so the first 12 characters group them; such films are held out together."""
    return path.stem[:12]


def _outlier_folder(config: Config) -> Path | None:
    if config.outliers == "none":
        return None
    if config.outliers != "auto":
        folder = Path(config.outliers).expanduser()
        if not folder.is_dir():
            raise PneumoError(f"outliers: {folder} is not a folder of films; give one, or outliers=none")
        return folder
    data = Path(str(config.data)).expanduser()
    for base in (data, data.parent, data.parent.parent):
        if (base / "ood" / "adult_other_hospitals").is_dir():
            return base / "ood" / "adult_other_hospitals"
    return None


def outlier_films(config: Config, progress: bool, quiet: bool = False) -> OutlierFilms | None:
    """The config's outlier films at its image size (unreadable ones skipped and logged, at DEBUG when `quiet`), or None when it names none."""
    say = logger.debug if quiet else logger.info
    folder = _outlier_folder(config)
    if folder is None:
        return None
    # decoded once per machine, like the training films (the labels are placeholders: only the films are used)
    records = [Record(path, "NORMAL", None, path.stem) for path in image_files(folder)]
    try:
        dataset = decode_dataset(records, config.image_size, config.cache_dir or None, config.workers, progress)
    except PneumoError as exc:  # every film unreadable
        say(f"outlier films skipped: {exc}; no readable films in {folder}: the input check gets no probe")
        return None
    for _, message in dataset.skipped:
        say(f"outlier film skipped: {message}")
    if not dataset.records:
        say(f"no films in {folder}: the input check gets no probe")
        return None
    return OutlierFilms(folder, dataset.images, [outlier_source(r.path) for r in dataset.records])
