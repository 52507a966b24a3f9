"""Training, top to bottom: run folder -> data -> parts -> epochs (steps, validation, checkpoints) -> report.

A run folder holds everything about one run: config.yaml, split.csv, history.csv,
history.png, roc.png, confusion.png, val_report.json, checkpoints/{last,best}/ and model/
(the chosen checkpoint with its decision threshold). It is never overwritten silently.
checkpoints/last/ also holds the full training state (`pneumo.training.state`), so a stopped
run continues with `train(..., resume=True)` and ends exactly as an uninterrupted one would.

Under torchrun (`torchrun --nproc-per-node N -m pneumo train ...`) every process runs the same
loop on its share of each batch (`pneumo.training.distributed`); rank 0 alone validates, logs and
writes the run folder (`end_epoch`, `finish_run`), while the others wait for it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from pneumo.config import Config, check_config, config_to_dict
from pneumo.data.augment import augment_batch
from pneumo.data.cache import remove_stale_cache_temps
from pneumo.data.preprocess import normalise
from pneumo.evaluation.metrics import check_n_boot
from pneumo.errors import PneumoError, check_flag, check_path, describe_size, refuse
from pneumo.inference.torch_backend import feature_rows
from pneumo.inference.torch_backend import TorchModel, class_probabilities
from pneumo.models.checkpoint import copy_checkpoint, save_checkpoint
from pneumo.models.meta import META, CheckpointMeta
from pneumo.training import distributed as dist
from pneumo.training.batchnorm import recalibrate_batchnorm
from pneumo.training.data import TrainingData, load_training_data, provenance
from pneumo.training.optim import pick_device
from pneumo.training.parts import RunParts, build_parts
from pneumo.training.report import ValidationPass, epoch_metrics, finish_run, validation_row
from pneumo.training.run_dir import (
    complete_best_copy,
    open_run,
    remove_leftover_temps,
    write_history,
)
from pneumo.training.tracking import Tracker, open_trackers
from pneumo.training.state import STATE, RunSoFar, load_train_state, save_train_state
from pneumo.utils.logs import LOGGER, deprecated_log
from pneumo.utils.progress import make_progress

__all__ = ["train", "TrainResult"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, float]]
    report: dict[str, Any]
    config: Config  # the run's config: with resume, the one read from its folder


def train(
    config: Config | None,
    *,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    n_boot: int = 1000,
    resume: bool = False,
    mlflow: str | None = None,
    tensorboard: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train one model as the config says and write its run folder.

    With resume=True, `out` is a run folder that stopped early: it continues after the last
    finished epoch with the config in the folder (`config` may be None, or must equal it)
    and ends exactly as an uninterrupted run would (bit for bit on the CPU).

    Each epoch's row and the final report, pictures and model also go to TensorBoard
    (`RUN/tensorboard/`) when it is installed (`tensorboard=False` turns it off), and to MLflow
    given a tracking URI (`mlflow=""`: `sqlite:///mlflow.db` here); see pneumo.training.tracking.

    Under torchrun every process calls this and gets the same result; rank 0 writes the run folder.

    Each epoch's line and what the run does to its folders go to the `pneumo.training` logger at INFO
    (`logging.basicConfig(level=logging.INFO, format="%(message)s")` shows them). `log`, a function
    given each line instead, is deprecated and goes in the next release.
    The global random state and cuDNN settings are as they were when it returns.

    Example:
        >>> result = train(load_config("seed", ["epochs=1", "limit=200"]), out="runs/try")
        >>> result.report["roc_auc"]
        >>> train(None, out="runs/stopped", resume=True)
    """
    if config is not None:
        config = check_config(config)
        pick_device(config.device)  # a GPU that is not there, before the run folder is made
    check_path("out", out, what="the run folder (to write, or with resume to continue)")
    overwrite, progress, resume = check_flag("overwrite", overwrite), check_flag("progress", progress), check_flag("resume", resume)
    n_boot = check_n_boot(n_boot)
    if mlflow is not None and not isinstance(mlflow, str):
        raise refuse("mlflow", "a tracking URI as a str ('' for sqlite:///mlflow.db here), or None", mlflow)
    tensorboard = check_flag("tensorboard", tensorboard, optional=True)
    if config is None and not resume:
        raise PneumoError('a new run needs a config (only a resumed run reads its own): load_config("seed") makes one')
    with deprecated_log(log, "train"):
        return _train_here_or_under_torchrun(config, out, overwrite, progress, n_boot, resume, mlflow, tensorboard)


def _train_here_or_under_torchrun(
    config: Config | None,
    out: str | Path,
    overwrite: bool,
    progress: bool,
    n_boot: int,
    resume: bool,
    mlflow: str | None,
    tensorboard: bool | None,
) -> TrainResult:
    """`train` once its arguments are checked: in this process, or as one of torchrun's."""
    if not dist.launched():
        with _scoped_global_state():
            return _train(config, out, overwrite, progress, n_boot, resume, mlflow, tensorboard)
    if resume:
        raise PneumoError(
            "a stopped run cannot be continued under torchrun (each process's random state is not saved); continue it "
            "as a single process, `pneumo train --resume RUN_DIR`: it goes on from the saved weights, optimiser, "
            "schedule and data order with the same global batch, though not exactly as the torchrun job would have"
        )
    if config is None:
        raise PneumoError("a new run needs a config (only a resumed run reads its own)")
    dist.per_rank_batch_size(config.batch_size)  # a batch that does not split is refused before any work
    with dist.process_group(pick_device(config.device)), _scoped_global_state():
        main = dist.is_main()
        with _only_warnings_unless(main):
            return _train(config, out, overwrite, progress and main, n_boot, resume, mlflow, tensorboard)


@contextmanager
def _only_warnings_unless(main: bool) -> Iterator[None]:
    """Rank 0 says what the run does; the other processes only warn (the same lines again, N times, say nothing new)."""
    parent = logging.getLogger(LOGGER)
    level = parent.level
    if not main:
        parent.setLevel(logging.WARNING)
    try:
        yield
    finally:
        parent.setLevel(level)


@contextmanager
def _scoped_global_state() -> Iterator[None]:
    """Give back torch's global generators and cuDNN autotuning as they were: a run seeds and sets both."""
    cpu_rng, benchmark = torch.get_rng_state(), torch.backends.cudnn.benchmark
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu_rng)
        torch.backends.cudnn.benchmark = benchmark
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _stopped_in_first_epoch(last: Path) -> bool:
    """True when a run stopped before its first epoch was committed (state.json is written last
    of an epoch's files): nothing to lose by starting it over. A later epoch's folder without
    state.json (a run made before resume existed) is refused by `load_train_state` instead."""
    if (last / STATE).exists():
        return False
    try:
        return int(json.loads((last / META).read_text()).get("epoch", 0)) <= 1
    except (OSError, ValueError, TypeError):
        return True  # no readable checkpoint at all: nothing was saved


def _train(
    config: Config | None,
    out: str | Path,
    overwrite: bool,
    progress: bool,
    n_boot: int,
    resume: bool,
    mlflow: str | None = None,
    tensorboard: bool | None = None,
) -> TrainResult:
    """`train` in one process: the whole run, or under torchrun this process's part of it."""
    # rank 0 makes (or checks) the run folder; under torchrun resume is refused and config given
    run_dir, config = open_run(config, out, overwrite, resume) if dist.is_main() else (Path(out), config)
    if dist.is_main():
        _remove_cache_temps(config)
    torch.manual_seed(config.seed + dist.rank())  # dropout masks differ between processes; DDP starts all from rank 0's weights
    device = dist.local_device(pick_device(config.device))
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: pick the fastest kernels once
    # a resumed run's split is the same; its data is checked against the saved state below
    data = load_training_data(config, run_dir, device, write=not resume and dist.is_main(), progress=progress)
    parts = build_parts(config, data, device, progress)
    checkpoints = run_dir / "checkpoints"
    so_far = RunSoFar()
    if resume and _stopped_in_first_epoch(checkpoints / "last"):
        logger.info("no epoch of this run was saved before it stopped; training it from the start with its saved config")
    elif resume:
        so_far = load_train_state(checkpoints / "last", parts.state, data.fingerprint)
        complete_best_copy(checkpoints, so_far)
        logger.info(f"resuming after epoch {so_far.epoch} of {config.epochs}")
    meta = _checkpoint_meta(config, data, parts)
    started = time.perf_counter() - sum(r["seconds"] for r in so_far.history)  # a resumed run counts its earlier epochs

    # TensorBoard when installed, MLflow when asked: rank 0 reports, and a tracker failing never stops the run
    tracker = open_trackers(mlflow, tensorboard) if dist.is_main() else Tracker()
    tracker.start(config_to_dict(config), run_dir, so_far.epoch + 1)
    last_pass: ValidationPass | None = None  # the last epoch's pass over validation, which the end of the run reuses
    try:
        with make_progress(progress) as bar:
            bar_task = bar.add_task(
                "training", total=config.epochs * len(parts.batches), completed=so_far.epoch * len(parts.batches), info=""
            )
            for epoch in range(so_far.epoch + 1, config.epochs + 1):
                epoch_start = time.perf_counter()
                parts.model.train()
                losses, seen_probs, seen_targets = [], [], []
                for step, idx in enumerate(parts.batches.index_batches()):
                    y = data.y_train[idx]
                    if parts.distillation is None:
                        x = augment_batch(data.x_train[idx].unsqueeze(1).float().div_(255), config.augment, parts.augment_rng)
                    else:  # the fixed views the teacher answered for (already augmented)
                        views, teacher = parts.distillation.batch(epoch, idx)
                        x = views.unsqueeze(1).float().div_(255)
                    x = normalise(x, parts.spec.mean, parts.spec.std).contiguous(memory_format=torch.channels_last)
                    with torch.autocast(
                        x.device.type, dtype=torch.bfloat16, enabled=parts.use_amp, cache_enabled=False
                    ):  # graphs need no cache
                        logits = parts.step_model(x)
                    loss = parts.task.loss(logits.float(), y, parts.class_weights, config.label_smoothing)
                    if parts.distillation is not None:
                        weight = parts.distillation.weight
                        soft = parts.task.distillation_loss(logits.float(), teacher, parts.class_weights[y], parts.distillation.temperature)
                        loss = (1 - weight) * loss + weight * soft
                    parts.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    parts.optimizer.step()
                    parts.scheduler.step()
                    if parts.ema is not None:
                        parts.ema.update_parameters(parts.model)
                    losses.append(loss.detach())
                    seen_probs.append(parts.task.probabilities(logits.detach().float()))
                    seen_targets.append(y)
                    bar.advance(bar_task)
                    if step % 25 == 0:
                        bar.update(bar_task, info=f"epoch {epoch}/{config.epochs} loss {loss.item():.4f}")
                row = _train_row(epoch, losses, seen_probs, seen_targets, parts, checkpoints)
                bar.update(bar_task, info=f"epoch {epoch}/{config.epochs} validating on {len(data.val)} films")  # seconds, not a hang
                if dist.is_main():
                    last_pass = end_epoch(config, run_dir, parts, data, so_far, meta, row, epoch_start)
                    tracker.epoch(so_far.history[-1])
                dist.barrier()  # the others wait here for the epoch to be saved

        # the run's model, threshold and report come from rank 0; every process returns the same result
        report = finish_run(config, run_dir, parts, data, so_far, meta, started, n_boot, progress, last_pass) if dist.is_main() else None
        if report is not None:
            tracker.finish(report, run_dir)
    finally:
        tracker.close()
    if dist.is_main():  # a kill during the run (of an earlier write, or another process's) may have left some
        remove_leftover_temps(run_dir)
        _remove_cache_temps(config)
    history, report = dist.broadcast((so_far.history, report))
    return TrainResult(run_dir, history, report, config)


def _remove_cache_temps(config: Config) -> None:
    """Delete the temporary files killed processes left in the image cache, saying how much."""
    n_files, n_bytes = remove_stale_cache_temps(config.cache_dir or None)
    if n_files:
        logger.info(
            f"removed {n_files} temporary file{'s' if n_files > 1 else ''} ({describe_size(n_bytes)}) that interrupted writes left in the image cache"
        )


def _checkpoint_meta(config: Config, data: TrainingData, parts: RunParts) -> CheckpointMeta:
    """What every checkpoint of the run records (each epoch's adds its epoch and metrics)."""
    return CheckpointMeta(
        architecture=config.model,
        task=config.task,
        classes=list(parts.task.classes),
        num_outputs=parts.task.num_outputs,
        image_size=config.image_size,
        in_chans=1,
        mean=parts.spec.mean,
        std=parts.spec.std,
        dropout=config.dropout,
        crop=config.crop,
        threshold=0.5,
        config=config_to_dict(config),
        **provenance(config, data),
    )


def _train_row(
    epoch: int, losses: list[torch.Tensor], probs: list[torch.Tensor], targets: list[torch.Tensor], parts: RunParts, checkpoints: Path
) -> dict[str, float]:
    """The epoch's training columns over every process's steps; a non-finite loss stops the run."""
    # a global batch's loss is the mean of the processes' equal-sized batch means
    step_losses = torch.stack(dist.all_gather(torch.stack(losses).float().cpu())).mean(0)
    if not torch.isfinite(step_losses).all():
        bad = int((~torch.isfinite(step_losses)).nonzero()[0])
        kept = f"; epoch {epoch - 1}'s checkpoint is in {checkpoints / 'last'}" if epoch > 1 else ""
        lr = parts.optimizer.defaults["lr"]
        raise PneumoError(
            f"loss became {step_losses[bad].item()} at epoch {epoch}, step {bad + 1}; try a lower lr (now {lr}), amp=false, or check the data{kept}"
        )
    train_probs = torch.cat(dist.all_gather(torch.cat(probs).cpu()))
    train_targets = torch.cat(dist.all_gather(torch.cat(targets).cpu()))
    row = {"epoch": epoch, "lr": parts.optimizer.param_groups[0]["lr"], "train_loss": float(step_losses.mean())}
    return row | epoch_metrics("train", train_targets.numpy(), train_probs.numpy(), parts.task)


def end_epoch(
    config: Config,
    run_dir: Path,
    parts: RunParts,
    data: TrainingData,
    so_far: RunSoFar,
    meta: CheckpointMeta,
    row: dict[str, float],
    epoch_start: float,
) -> ValidationPass | None:
    """Rank 0's end of an epoch: validate, append to history.csv, save last/ (weights and full
    state) and best/ when it improved, log the epoch's line. The last epoch's validation pass
    also taps the feature rows and is returned: the end of the run reuses it for these weights."""
    epoch = int(row["epoch"])
    model = parts.eval_model
    if config.bn_recalibrate:
        recalibrate_batchnorm(model, parts.x_calibrate, parts.spec.mean, parts.spec.std)
    last = epoch == config.epochs
    if last:
        val_probs, val_rows = feature_rows(TorchModel(model, meta), data.x_val, config.eval_batch_size)
    else:
        val_probs = class_probabilities(model, data.x_val, parts.task, parts.spec.mean, parts.spec.std, config.eval_batch_size)
    row = row | validation_row(val_probs, data.y_val, parts.task)
    row["seconds"] = time.perf_counter() - epoch_start
    so_far.history.append(row)
    write_history(run_dir / "history.csv", so_far.history)

    checkpoints = run_dir / "checkpoints"
    score = -row["val_loss"] if config.select_metric == "loss" else row[f"val_{config.select_metric}"]
    save_checkpoint(
        checkpoints / "last", model, meta.replace(epoch=epoch, val_metrics={k: v for k, v in row.items() if k.startswith("val_")})
    )
    improved = not math.isnan(score) and score > so_far.best_score
    if improved:
        so_far.best_score, so_far.best_epoch = score, epoch
    so_far.epoch = epoch
    save_train_state(checkpoints / "last", parts.state, so_far, data.fingerprint)
    if improved:  # after the state: a stop in between is finished by complete_best_copy
        copy_checkpoint(checkpoints / "last", checkpoints / "best")
    summary = (
        f"epoch {epoch:>3}/{config.epochs}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"val_acc {row['val_accuracy']:.3f}  val_auc {row['val_roc_auc']:.4f}  {row['seconds']:.1f}s"
    )
    logger.info(summary)  # above the progress bar, when there is one
    return ValidationPass(epoch, val_probs, val_rows) if last else None
