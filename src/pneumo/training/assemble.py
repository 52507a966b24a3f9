"""Several trained models as one: an ensemble checkpoint, calibrated and thresholded on the
validation images none of its members trained on. Given one model, the same recalibrates it:
its temperature and threshold are fitted again (e.g. by a newer method) on its validation images.

Each member's split is drawn again from the config its checkpoint records, and checked
against the data fingerprint it recorded; the ensemble is judged on the images that are
validation for every member (members trained with one `split_seed` share all of them) and its
input checks are fitted on the images that are training for every member.

Example:
    >>> ensemble(["runs/s0", "runs/s1", "runs/s2"], out="models/ensemble").report["roc_auc"]
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pneumo.config import Config, config_to_dict
from pneumo.data.cache import data_fingerprint
from pneumo.evaluation.overlap import save_training_films
from pneumo.data.layout import Record
from pneumo.errors import PneumoError, check_choice, check_flag, check_number, check_path, refuse
from pneumo.evaluation.calibration import CALIBRATION_METHODS
from pneumo.evaluation.metrics import check_n_boot
from pneumo.evaluation.report import write_report
from pneumo.evaluation.threshold import THRESHOLD_METHODS
from pneumo.inference.loading import check_model, load_model
from pneumo.inference.torch_backend import TorchModel
from pneumo.models.ensemble import ENSEMBLE, Ensemble, EnsembleMember, split_head
from pneumo.models.meta import CheckpointMeta
from pneumo.training.data import (
    TrainingData,
    decode_training_data,
    model_recipe,
    outlier_films,
    provenance,
    split_training_records,
)
from pneumo.training.report import input_check_line, operating_point, write_figures, write_model
from pneumo.training.run_dir import REPORT, prepare_run_dir
from pneumo.utils.logs import deprecated_log

__all__ = ["EnsembleResult", "ensemble"]

logger = logging.getLogger(__name__)


def _shared(splits: Sequence[list[Record]]) -> list[Record]:
    """The records every list has, in the first list's order."""
    common = set.intersection(*({str(r.path) for r in split} for split in splits))
    return [r for r in splits[0] if str(r.path) in common]


def _check_members(models: list[TorchModel]) -> None:
    if not models:
        raise PneumoError("give at least one trained model")
    first = models[0].meta
    if len(models) > 1:
        for m in models:
            if m.meta.architecture == ENSEMBLE:
                raise PneumoError(f"{m.folder} is an ensemble already and cannot be a member of another; give its members instead")
    for m in models[1:]:
        if (m.meta.task, m.meta.image_size) != (first.task, first.image_size):
            raise PneumoError(
                f"ensemble members must share task and input size: {models[0].folder} is {first.task} at {first.image_size} px, "
                f"{m.folder} is {m.meta.task} at {m.meta.image_size} px"
            )


def _ensemble_net(models: list[TorchModel]) -> tuple[Ensemble, list[EnsembleMember]]:
    members = [
        EnsembleMember(
            m.meta.architecture,
            m.meta.num_outputs,
            m.meta.mean,
            m.meta.std,
            m.meta.temperature,
            m.meta.dropout,
            m.meta.crop,
            str(m.folder),
            m.meta.weights_sha256,
        )
        for m in models
    ]
    parts = [split_head(m.net) for m in models]
    return Ensemble([b for b, _ in parts], [h for _, h in parts], members, models[0].task).eval(), members


def _single(model: TorchModel) -> tuple[torch.nn.Module, CheckpointMeta]:
    """One model to recalibrate: its own network and metadata (the temperature is fitted anew)."""
    return model.net, model.meta.replace(temperature=1.0, logit_offset=0.0, site_calibration={}, calibration_prior={})


def _ensemble(
    models: list[TorchModel], sources: Sequence[str | Path], config: Config, data: TrainingData
) -> tuple[torch.nn.Module, CheckpointMeta]:
    net, described = _ensemble_net(models)
    task = models[0].task
    meta = CheckpointMeta(
        architecture=ENSEMBLE,
        task=task.name,
        classes=list(task.classes),
        num_outputs=task.num_outputs,
        image_size=models[0].image_size,
        mean=0.0,
        std=1.0,
        threshold=0.5,
        members=[dataclasses.asdict(d) for d in described],
        config={**config_to_dict(config), "members": [str(m) for m in sources]},
        **provenance(config, data),
    )
    return net, meta


@dataclass(frozen=True)
class EnsembleResult:
    """The ensemble's checkpoint folder and its validation report (also in `out/val_report.json`)."""

    out: Path
    report: dict[str, Any]


def _check_members_argument(members: object) -> list[Any]:
    """The members as a list: a lone run folder is a list of one (as `predict` takes a lone file); a str
    is never its characters, nor a dict or a set an order."""
    if isinstance(members, (str, os.PathLike)):
        members = [members]
    if not isinstance(members, (list, tuple)) or not members:
        raise refuse("members", "a list of run or checkpoint folders (at least one)", members)
    for i, member in enumerate(members):
        check_model(f"members[{i}]", member)
    return list(members)


def ensemble(
    members: Sequence[str | Path],
    *,
    out: str | Path,
    data: str | Path | None = None,
    outliers: str | Path | None = None,
    calibration: str = "shift",
    threshold: str | float = "shift",
    n_boot: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> EnsembleResult:
    """Average trained models into one checkpoint folder `out` (usable as `--model out` everywhere);
    given one model, recalibrate it into `out`.

    Args:
        members: run or checkpoint folders of models of one task and input size.
        data: where the members' training data is now, if not where their configs say.
        outliers: films the ensemble must not judge, for its input check (a folder, "auto" or "none"),
            if not what the first member's config says (members trained where those films were not).
        calibration, threshold: as the config keys of the same names.
        log: deprecated, goes in the next release: what it did is logged (logger `pneumo.training.assemble`, INFO).
    Returns:
        The folder and the ensemble's validation report (also written to `out/val_report.json`).
    """
    members = _check_members_argument(members)
    check_path("out", out, what="the model folder to write")
    check_path("data", data, what="the folder the members' training data is in now", optional=True)
    check_path("outliers", outliers, what="a folder of films the ensemble must not judge, 'auto' or 'none'", optional=True)
    check_choice("calibration", calibration, CALIBRATION_METHODS)
    if not (isinstance(threshold, str) and threshold in THRESHOLD_METHODS):
        try:
            check_number("threshold", threshold, minimum=0, maximum=1)
        except PneumoError:
            raise refuse("threshold", f"a number in [0, 1] or one of {', '.join(map(repr, THRESHOLD_METHODS))}", threshold) from None
    n_boot = check_n_boot(n_boot)
    overwrite, progress = check_flag("overwrite", overwrite), check_flag("progress", progress)
    with deprecated_log(log, "ensemble"):
        return _ensemble_into(members, out, data, outliers, calibration, threshold, n_boot, overwrite, progress)


def _ensemble_into(
    members: list[str | Path],
    out: str | Path,
    data: str | Path | None,
    outliers: str | Path | None,
    calibration: str,
    threshold: str | float,
    n_boot: int,
    overwrite: bool,
    progress: bool,
) -> EnsembleResult:
    """`ensemble` once its arguments are checked."""
    out = prepare_run_dir(out, overwrite)  # refused before any work, if it must be
    models = [load_model(m, backend="torch", checks=False) for m in members]
    _check_members(models)
    configs = [model_recipe(m.meta.config, m.folder, data, outliers) for m in models]
    splits = [split_training_records(c) for c in configs]
    for model, config, (train_m, val_m) in zip(models, configs, splits):
        if model.meta.data_fingerprint and data_fingerprint(train_m + val_m, config.cache_dir or None) != model.meta.data_fingerprint:
            raise PneumoError(
                f"the images at {config.data} are not the ones {model.folder} was trained on (their fingerprint differs), so its "
                "validation split cannot be drawn again; give --data where its training data is"
            )
    val, train = _shared([v for _, v in splits]), _shared([t for t, _ in splits])
    if not val:
        raise PneumoError("no validation image is validation for every member: train the members with one split_seed (--set split_seed=0)")
    logger.info(f"{len(models)} model(s): {len(train)} images every one trained on, {len(val)} none did")
    decoded: TrainingData = decode_training_data(configs[0], train, val, torch.device("cpu"), progress)
    net, meta = _single(models[0]) if len(models) == 1 else _ensemble(models, members, configs[0], decoded)
    point = operating_point(net, meta, decoded, calibration, threshold, n_boot, seed=0, progress=progress)
    outliers = outlier_films(configs[0], progress)
    point.report["input_check"] = write_model(out, net, point, decoded, outliers, progress=progress, augment=configs[0].augment)
    save_training_films(out, [r for t, _ in splits for r in t], val, configs[0].cache_dir or None)  # any member's training films
    logger.info(input_check_line(point.report["input_check"]))
    write_figures(out, point, decoded, f"ensemble of {len(models)}")
    write_report(point.report, out / REPORT)
    return EnsembleResult(out, point.report)
