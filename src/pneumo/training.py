"""Training, top to bottom: data -> split -> cache -> model -> epochs -> checkpoints -> report.

A run folder holds everything about one run: config.yaml, split.csv, history.csv,
history.png, roc.png, confusion.png, val_report.json, checkpoints/{last,best}/ and model/
(the chosen checkpoint with its decision threshold). It is never overwritten silently.
checkpoints/last/ also holds the full training state (pneumo.train_state), so a stopped run
continues with `train(..., resume=True)` and ends exactly as an uninterrupted one would.

Under torchrun (`torchrun --nproc-per-node N -m pneumo train ...`) every process runs the same
loop on its share of each batch (pneumo.distributed); rank 0 alone validates, logs and writes
the run folder, while the others wait for it.
"""
from __future__ import annotations

import csv
import json
import math
import platform
import shutil
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from sklearn.metrics import log_loss
from torch.optim.swa_utils import AveragedModel

from pneumo import __version__
from pneumo import distributed as dist
from pneumo.checkpoint import LoadedModel, class_probabilities, copy_checkpoint, save_checkpoint, task_classes
from pneumo.config import Config, config_to_dict, load_config
from pneumo.data.augment import augment_batch
from pneumo.data.cache import decode_dataset
from pneumo.data.layout import Record, discover
from pneumo.data.loader import ArrayBatches
from pneumo.data.split import shared_patients, split_records, subsample, write_split
from pneumo.errors import PneumoError
from pneumo.feature_stats import fit_feature_stats, save_feature_stats
from pneumo.evaluation import write_report
from pneumo.metrics import binary_metrics, bootstrap_intervals, multiclass_metrics, youden_threshold
from pneumo.models import create_model, model_spec
from pneumo.plots import confusion_plot, history_panels, roc_plot
from pneumo.preprocess import normalise
from pneumo.progress import make_progress
from pneumo.robustness import shift_report, shift_threshold, shifted_probabilities
from pneumo.train_state import RunSoFar, TrainingParts, load_train_state, save_train_state, saved_epoch

__all__ = ["train", "TrainResult", "pick_device"]

FEATURE_STATS_MIN_IMAGES = 100  # fewer training images give no usable feature distribution


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, float]]
    report: dict[str, Any]
    config: Config  # the run's config: with resume, the one read from its folder


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; asking for CUDA without one is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise PneumoError("config asks for device 'cuda' but no CUDA GPU is available; use --set device=cpu")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def prepare_run_dir(out: str | Path, overwrite: bool) -> Path:
    """An empty run folder; an existing non-empty one only with overwrite, and only if it is a run."""
    run_dir = Path(out)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise PneumoError(f"run folder {run_dir} already exists and is not empty; choose another --out or pass --overwrite")
        if not (run_dir / "config.yaml").exists():
            raise PneumoError(f"{run_dir} is not empty and does not look like a pneumo run folder; refusing to overwrite it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def resume_run_dir(out: str | Path, config: Config | None) -> tuple[Path, Config]:
    """The run folder to continue and its config; refuses a folder that cannot, or need not, be resumed.

    A resumed run keeps the config it started with: any other would make it a different run.
    """
    run_dir = Path(out)
    if not (run_dir / "config.yaml").exists():
        raise PneumoError(f"{run_dir} is not a pneumo run folder (it has no config.yaml); give the folder of the run to continue")
    saved = load_config(run_dir / "config.yaml")
    if config is not None and config != saved:
        given, started = config_to_dict(config), config_to_dict(saved)
        changed = ", ".join(f"{k} (run: {started[k]!r}, given: {given[k]!r})" for k in started if given[k] != started[k])
        raise PneumoError(f"the config differs from the one run {run_dir} started with in {changed}; a resumed run keeps its config: give no other")
    done = saved_epoch(run_dir / "checkpoints" / "last")
    if done >= saved.epochs and (run_dir / "val_report.json").exists():  # val_report.json is written last
        raise PneumoError(f"run {run_dir} already finished all {saved.epochs} epochs; its model is in {run_dir / 'model'}")
    return run_dir, saved


def open_run(config: Config | None, out: str | Path, overwrite: bool, resume: bool) -> tuple[Path, Config]:
    """The run folder and config: a new folder for a new run, the existing one for a resumed run."""
    if resume:
        if overwrite:
            raise PneumoError("resume continues a run and overwrite replaces it; ask for one of them")
        return resume_run_dir(out, config)
    if config is None:
        raise PneumoError("a new run needs a config (only a resumed run reads its own)")
    run_dir = prepare_run_dir(out, overwrite)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return run_dir, config


def checkpoint_epoch(folder: Path) -> int | None:
    """The epoch a checkpoint folder holds, or None when it has none."""
    try:
        return int(json.loads((folder / "meta.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return None


def complete_best_copy(checkpoints: Path, so_far: RunSoFar) -> None:
    """Finish copying a new best epoch to best/ when the run stopped after saving its state but before the copy."""
    if not so_far.best_epoch or checkpoint_epoch(checkpoints / "best") == so_far.best_epoch:
        return
    if checkpoint_epoch(checkpoints / "last") != so_far.best_epoch:
        raise PneumoError(
            f"{checkpoints}: neither best/ nor last/ holds epoch {so_far.best_epoch}, which the training state names "
            "as the best; the folder was changed by hand: train the run again (--overwrite)"
        )
    copy_checkpoint(checkpoints / "last", checkpoints / "best")


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
    return subsample(records, config.limit, config.seed, config.task)


def class_weights(targets: np.ndarray, n_classes: int, balance: str) -> torch.Tensor:
    """w_c = N / (K * N_c), as in the notebook (K = 2 there); ones when balancing is off."""
    if balance == "none":
        return torch.ones(n_classes)
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    return torch.tensor(len(targets) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = list(model.parameters())
    fused = params[0].is_cuda  # one kernel for the whole update instead of a few per tensor
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up, then constant or cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def recalibrate_batchnorm(net: torch.nn.Module, images: torch.Tensor, mean: float, std: float, batch_size: int = 128) -> None:
    """Replace BatchNorm running statistics with plain averages over batches of `images` (uint8 [N, S, S]).

    Running averages with Keras's momentum (0.01) lag far behind the weights in short runs,
    and averaged (EMA) weights never had statistics of their own. Dropout stays off while
    measuring, so its train-time variance does not leak into the statistics.
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = net.training
    momenta = [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    for start in range(0, len(images), batch_size):
        net(normalise(images[start : start + batch_size], mean, std).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.train(was_training)


def cuda_graphed(model: torch.nn.Module, batch_shape: tuple[int, ...], use_amp: bool) -> torch.nn.Module:
    """The model with its training-mode forward and backward replayed from CUDA graphs.

    Eager PyTorch spends ~10 ms of CPU per step launching a small network's kernels, far
    more than the GPU needs to run them; a replayed graph is one launch. Eval mode still
    runs the ordinary forward. The warm-up passes that recording needs leave no trace:
    BatchNorm statistics are restored afterwards and no gradients accumulate.
    """
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    sample = torch.randn(batch_shape, device=next(model.parameters()).device).contiguous(memory_format=torch.channels_last)
    model.train()
    with warnings.catch_warnings(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp, cache_enabled=False):
        # the warm-up runs on a side stream, as recording requires; PyTorch warns about that once
        warnings.filterwarnings("ignore", message=".*(AccumulateGrad node's stream|no current CUDA context)")
        graphed = torch.cuda.make_graphed_callables(model, (sample,))
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return graphed


def ema_update(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """In-place EMA step over lists of tensors, with a warm-up: the decay is
    min(decay, (1 + n) / (10 + n)) after n updates, so short runs are not pinned to their
    first weights. A few multi-tensor kernels per step and no host sync (per-tensor updates
    cost hundreds of kernel launches per step on a GPU)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # counters such as BatchNorm's num_batches_tracked
            torch._foreach_copy_(averaged, current)
            return
        d = ((1 + num_averaged) / (10 + num_averaged)).clamp(max=decay).to(averaged[0].dtype)
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1 - d))

    return update


def task_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, task: str, smoothing: float) -> torch.Tensor:
    """Class-weighted loss, averaged over the batch as Keras does with class_weight."""
    if task == "binary":
        target = y.float() * (1 - smoothing) + 0.5 * smoothing
        per_image = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
    else:
        per_image = F.cross_entropy(logits, y, reduction="none", label_smoothing=smoothing)
    return (weights[y] * per_image).mean()


def epoch_metrics(prefix: str, targets: np.ndarray, probs: np.ndarray, task: str) -> dict[str, float]:
    """History columns: loss, accuracy, precision, recall, ROC AUC of P(pneumonia) at 0.5."""
    m = binary_metrics(targets > 0, 1 - probs[:, 0], 0.5)
    row = {f"{prefix}_{k}": m[k] for k in ("accuracy", "precision", "recall", "roc_auc")}
    if task == "pathogen":
        row[f"{prefix}_accuracy_3class"] = float((probs.argmax(1) == targets).mean())
    return row


def validation_report(
    val: list[Record], probs: np.ndarray, threshold: float, task: str, train: list[Record], n_boot: int, seed: int
) -> dict[str, Any]:
    """Metrics of the chosen model on validation, with patient-clustered 95% CIs and the leak check."""
    y = np.array([r.target("binary") for r in val])
    p = 1 - probs[:, 0]
    report: dict[str, Any] = binary_metrics(y, p, threshold)
    report["ci95"] = bootstrap_intervals(y, p, threshold, groups=[r.patient_id for r in val], n_boot=n_boot, seed=seed)
    report["at_0.5"] = binary_metrics(y, p, 0.5)
    if task == "pathogen":
        report["pathogen"] = multiclass_metrics([r.target(task) for r in val], probs, task_classes(task))
    leaked = shared_patients(train, val)
    seen = np.array([r.patient_id in leaked for r in val])
    report["leak"] = {
        "patients_in_both": len(leaked),
        "val_images_of_patients_seen_in_train": int(seen.sum()),
        "seen": binary_metrics(y[seen], p[seen], threshold) if seen.any() else None,
        "unseen": binary_metrics(y[~seen], p[~seen], threshold) if (~seen).any() else None,
    }
    return report


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def train(
    config: Config | None,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    n_boot: int = 1000,
    resume: bool = False,
) -> TrainResult:
    """Train one model as the config says and write its run folder.

    With resume=True, `out` is a run folder that stopped early: it continues after the last
    finished epoch with the config in the folder (`config` may be None, or must equal it)
    and ends exactly as an uninterrupted run would (bit for bit on the CPU).

    Under torchrun every process calls this and gets the same result; rank 0 writes the run folder.

    Example:
        >>> result = train(load_config("seed", ["epochs=1", "limit=200"]), "runs/try")
        >>> result.report["roc_auc"]
        >>> train(None, "runs/stopped", resume=True)
    """
    if not dist.launched():
        return _train(config, out, overwrite, progress, log, n_boot, resume)
    if resume:
        raise PneumoError(
            "a stopped run cannot be continued under torchrun (each process's random state is not saved); continue it "
            "as a single process, `pneumo train --resume RUN_DIR`: it goes on from the saved weights, optimiser, "
            "schedule and data order with the same global batch, though not exactly as the torchrun job would have"
        )
    if config is None:
        raise PneumoError("a new run needs a config (only a resumed run reads its own)")
    dist.per_rank_batch_size(config.batch_size)  # a batch that does not split is refused before any work
    with dist.process_group(pick_device(config.device)):
        main = dist.is_main()
        return _train(config, out, overwrite, progress and main, log if main else _silent, n_boot, resume)


def _silent(message: str) -> None:
    """The log of the processes other than rank 0."""


def _train(
    config: Config | None, out: str | Path, overwrite: bool, progress: bool, log: Callable[[str], None], n_boot: int, resume: bool
) -> TrainResult:
    """`train` in one process: the whole run, or under torchrun this process's part of it."""
    # rank 0 makes (or checks) the run folder; under torchrun resume is refused and config given
    run_dir, config = open_run(config, out, overwrite, resume) if dist.is_main() else (Path(out), config)
    torch.manual_seed(config.seed + dist.rank())  # dropout masks differ between processes; DDP starts all from rank 0's weights
    device = dist.local_device(pick_device(config.device))
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: pick the fastest kernels once
    spec = model_spec(config.model)
    classes = task_classes(config.task)
    n_outputs = 1 if config.task == "binary" else len(classes)

    # data: records -> split -> decoded once into the cache -> tensors on the training device
    records = training_records(config)
    train_recs, val_recs = split_records(records, config.val_fraction, config.seed, config.split, config.task)
    with dist.local_main_first():  # one process per machine decodes; its others read the cache it wrote
        dataset = decode_dataset(train_recs + val_recs, config.image_size, config.cache_dir or None, config.workers, progress, config.strict)
    if dataset.skipped:  # unreadable files leave the split they were drawn into
        unreadable = {path for path, _ in dataset.skipped}
        train_recs = [r for r in train_recs if str(r.path) not in unreadable]
        val_recs = [r for r in val_recs if str(r.path) not in unreadable]
        log(f"skipped {len(dataset.skipped)} unreadable images (strict=true makes this an error): " + "; ".join(m for _, m in dataset.skipped[:5]))
    if not train_recs or not val_recs:
        raise PneumoError("after skipping unreadable images, the training or validation split is empty; check the data")
    if not resume and dist.is_main():  # a resumed run's split is the same; its data is checked against the saved state below
        write_split(run_dir / "split.csv", {"train": train_recs, "val": val_recs})
    images, data_fingerprint = dataset.images, dataset.fingerprint
    y_all = np.array([r.target(config.task) for r in train_recs + val_recs])
    n_train = len(train_recs)
    x_train = torch.from_numpy(images[:n_train]).to(device)
    y_train = torch.from_numpy(y_all[:n_train]).to(device)
    x_val, y_val = torch.from_numpy(images[n_train:]).to(device), y_all[n_train:]
    leaked = shared_patients(train_recs, val_recs)
    log(
        f"data: {n_train} train / {len(val_recs)} val images ({config.split} split, "
        f"{len(leaked)} patients on both sides); pneumonia share {np.mean(y_all > 0):.2f}; device {device}"
    )

    # model, loss weights, optimiser, schedule
    model = create_model(config.model, num_outputs=n_outputs, image_size=config.image_size, dropout=config.dropout).to(device)
    model = model.to(memory_format=torch.channels_last)  # ~2x faster convolutions on CPU (oneDNN) and GPU
    # with EMA, validation, checkpoints and the final model use the averaged weights (rank 0 validates: it keeps them)
    ema = AveragedModel(model, multi_avg_fn=ema_update(config.ema), use_buffers=True) if config.ema and dist.is_main() else None
    use_amp = config.amp and device.type == "cuda"
    graphs = config.cuda_graphs and device.type == "cuda" and not config.compile
    if graphs and dist.launched():
        log("cuda_graphs is off under torchrun: DistributedDataParallel's gradient all-reduce runs outside a recorded graph")
        graphs = False
    # under torchrun: BatchNorm stays per process (see the README, "Scaling out"), gradients are averaged over processes
    step_model = dist.wrap(model)
    if config.compile:
        step_model = torch.compile(step_model)
    elif graphs:  # every batch has one shape: drop_last below
        step_model = cuda_graphed(model, (min(config.batch_size, n_train), 1, config.image_size, config.image_size), use_amp)
    eval_model = ema.module if ema is not None else model
    weights = class_weights(y_all[:n_train], len(classes), config.balance).to(device)
    log(f"model: {config.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters); class weights {[round(w, 3) for w in weights.tolist()]}")
    optimizer = make_optimizer(config, model)
    # each process takes its share of every batch: the batch over all of them is config.batch_size
    per_rank_batch = dist.per_rank_batch_size(config.batch_size)
    batches = ArrayBatches(
        x_train, y_train, per_rank_batch, shuffle=True, seed=config.seed, drop_last=n_train > config.batch_size, rank=dist.rank(), world_size=dist.world_size()
    )
    if dist.launched():
        log(f"torchrun: {dist.world_size()} processes, {per_rank_batch} images each per step; rank 0 validates and writes")
    total_steps = config.epochs * len(batches)
    warmup = int(config.warmup_epochs * len(batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup, config.schedule))
    augment_rng = torch.Generator(device=device).manual_seed(config.seed + dist.rank())  # each process its own draws
    calibrate_idx = torch.randperm(n_train, generator=torch.Generator().manual_seed(config.seed))[: config.bn_recalibrate]
    x_calibrate = x_train[calibrate_idx.to(device)]
    parts = TrainingParts(model, optimizer, scheduler, ema, {"batches": batches.generator, "augment": augment_rng})
    checkpoints = run_dir / "checkpoints"
    so_far = load_train_state(checkpoints / "last", parts, data_fingerprint) if resume else RunSoFar()
    if resume:
        complete_best_copy(checkpoints, so_far)
        log(f"resuming after epoch {so_far.epoch} of {config.epochs}")

    meta = {
        "architecture": config.model,
        "task": config.task,
        "classes": classes,
        "num_outputs": n_outputs,
        "image_size": config.image_size,
        "in_chans": 1,
        "mean": spec.mean,
        "std": spec.std,
        "dropout": config.dropout,
        "threshold": 0.5,
        "config": config_to_dict(config),
        "data_source": str(config.data),
        "data_fingerprint": data_fingerprint,
        "n_train": n_train,
        "n_val": len(val_recs),
        "pneumo_version": __version__,
        "torch_version": torch.__version__,
    }
    started = time.perf_counter() - sum(r["seconds"] for r in so_far.history)  # a resumed run counts its earlier epochs
    with make_progress(progress) as bar:
        task_id = bar.add_task("training", total=total_steps, completed=so_far.epoch * len(batches), info="")
        for epoch in range(so_far.epoch + 1, config.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            losses, seen_probs, seen_targets = [], [], []
            for step, (x, y) in enumerate(batches):
                x = augment_batch(x.unsqueeze(1).float().div_(255), config.augment, augment_rng)
                x = normalise(x, spec.mean, spec.std).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp, cache_enabled=False):  # graphs need no cache
                    logits = step_model(x)
                loss = task_loss(logits.float(), y, weights, config.task, config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                losses.append(loss.detach())
                seen_probs.append(torch.softmax(logits.detach().float(), 1) if n_outputs > 1 else torch.sigmoid(logits.detach().float()))
                seen_targets.append(y)
                bar.advance(task_id)
                if step % 25 == 0:
                    bar.update(task_id, info=f"epoch {epoch}/{config.epochs} loss {loss.item():.4f}")
            # every process's steps: a global batch's loss is the mean of the processes' equal-sized batch means
            step_losses = torch.stack(dist.all_gather(torch.stack(losses).float().cpu())).mean(0)
            if not torch.isfinite(step_losses).all():
                bad = int((~torch.isfinite(step_losses)).nonzero()[0])
                kept = f"; epoch {epoch - 1}'s checkpoint is in {checkpoints / 'last'}" if epoch > 1 else ""
                raise PneumoError(
                    f"loss became {step_losses[bad].item()} at epoch {epoch}, step {bad + 1}; try a lower lr "
                    f"(now {config.lr}), amp=false, or check the data{kept}"
                )
            train_probs = torch.cat(dist.all_gather(torch.cat(seen_probs).cpu()))
            train_targets = torch.cat(dist.all_gather(torch.cat(seen_targets).cpu()))
            if n_outputs == 1:
                train_probs = torch.cat([1 - train_probs, train_probs], dim=1)
            if not dist.is_main():
                dist.barrier()  # while rank 0 validates and saves the epoch
                continue
            if config.bn_recalibrate:
                recalibrate_batchnorm(eval_model, x_calibrate, spec.mean, spec.std)
            val_probs = class_probabilities(eval_model, x_val, config.task, spec.mean, spec.std, config.eval_batch_size)
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": float(step_losses.mean())}
            row |= epoch_metrics("train", train_targets.numpy(), train_probs.numpy(), config.task)
            row["val_loss"] = float(log_loss(y_val, np.clip(val_probs, 1e-7, 1), labels=list(range(len(classes)))))
            row |= epoch_metrics("val", y_val, val_probs, config.task)
            row["seconds"] = time.perf_counter() - epoch_start
            so_far.history.append(row)
            _write_history(run_dir / "history.csv", so_far.history)

            score = -row["val_loss"] if config.select_metric == "loss" else row[f"val_{config.select_metric}"]
            epoch_meta = {**meta, "epoch": epoch, "val_metrics": {k: v for k, v in row.items() if k.startswith("val_")}}
            save_checkpoint(checkpoints / "last", eval_model, epoch_meta)
            improved = not math.isnan(score) and score > so_far.best_score
            if improved:
                so_far.best_score, so_far.best_epoch = score, epoch
            so_far.epoch = epoch
            save_train_state(checkpoints / "last", parts, so_far, data_fingerprint)
            if improved:  # after the state: a stop in between is finished by complete_best_copy
                copy_checkpoint(checkpoints / "last", checkpoints / "best")
            summary = (
                f"epoch {epoch:>3}/{config.epochs}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
                f"val_acc {row['val_accuracy']:.3f}  val_auc {row['val_roc_auc']:.4f}  {row['seconds']:.1f}s"
            )
            if progress:
                bar.console.print(summary)
            else:
                log(summary)
            dist.barrier()  # the others wait here for the epoch to be saved

    # the run's model: best or last epoch, with a decision threshold chosen on validation (by rank 0;
    # the other processes wait for its report, so that every process returns the same result)
    if not dist.is_main():
        history, report = dist.broadcast(None)
        return TrainResult(run_dir, history, report, config)
    chosen_epoch = so_far.best_epoch if config.select == "best" and so_far.best_epoch else config.epochs
    if chosen_epoch != config.epochs:
        eval_model.load_state_dict(load_file(str(checkpoints / "best" / "weights.safetensors")))
    val_probs = class_probabilities(eval_model, x_val, config.task, spec.mean, spec.std, config.eval_batch_size)
    y_val_binary = (y_val > 0).astype(int)
    val_images = x_val.cpu().numpy()

    def pneumonia_probability(images: np.ndarray) -> np.ndarray:
        return 1 - class_probabilities(eval_model, images, config.task, spec.mean, spec.std, config.eval_batch_size)[:, 0]

    shifted = shifted_probabilities(pneumonia_probability, val_images, unshifted=1 - val_probs[:, 0])
    if config.threshold == "youden":
        threshold = youden_threshold(y_val_binary, 1 - val_probs[:, 0])
    elif config.threshold == "shift":
        threshold = shift_threshold(shifted, y_val_binary)
    else:
        threshold = float(config.threshold)
    report = validation_report(val_recs, val_probs, threshold, config.task, train_recs, n_boot, config.seed)
    report["shifted"] = shift_report(shifted, y_val_binary, threshold)
    report |= {"epoch": chosen_epoch, "threshold_method": str(config.threshold), "seconds_total": time.perf_counter() - started}
    report["seconds_per_epoch"] = float(np.mean([r["seconds"] for r in so_far.history]))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    processes = f" x {dist.world_size()} processes" if dist.launched() else ""
    report["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device}{gpu}{processes}"
    final_meta = {
        **meta,
        "epoch": chosen_epoch,
        "threshold": threshold,
        "threshold_method": str(config.threshold),
        "val_metrics": {k: report[k] for k in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "loss")},
        "val_ci95": report["ci95"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    save_checkpoint(run_dir / "model", eval_model, final_meta)
    if n_train >= FEATURE_STATS_MIN_IMAGES:  # for the input checks' distance from the training images
        stats = fit_feature_stats(LoadedModel(eval_model, final_meta), x_train, batch_size=config.eval_batch_size)
        save_feature_stats(stats, run_dir / "model")
    history_panels(so_far.history, run_dir / "history.png")
    roc_plot(y_val_binary, 1 - val_probs[:, 0], run_dir / "roc.png", threshold, title=f"Validation ROC ({config.split} split)")
    confusion_plot(report["confusion_matrix"], ["NORMAL", "PNEUMONIA"], run_dir / "confusion.png", title=f"Validation, threshold {threshold:.3g}")
    write_report(report, run_dir / "val_report.json")  # last: its presence says the run finished
    dist.broadcast((so_far.history, report))
    return TrainResult(run_dir, so_far.history, report, config)
