"""The live objects of one training run, built from its config and data."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel

from pneumo.config import Config
from pneumo.data.loader import ArrayBatches
from pneumo.models.registry import ModelSpec, create_model, model_spec
from pneumo.tasks import Task, get_task
from pneumo.training import distributed as dist
from pneumo.training.cuda_graphs import cuda_graphed
from pneumo.training.data import TrainingData
from pneumo.training.distill import Distillation, distillation_data
from pneumo.training.optim import bf16_autocast_helps, class_weights, ema_update, lr_factor, make_optimizer
from pneumo.training.state import TrainingParts

__all__ = ["RunParts", "build_parts"]

logger = logging.getLogger(__name__)


@dataclass
class RunParts:
    """Network, EMA copy, optimiser, schedule, batches and generators of a run."""

    task: Task
    spec: ModelSpec
    model: torch.nn.Module  # the network being trained
    step_model: torch.nn.Module  # what a training step calls: the model, DDP-wrapped, compiled or CUDA-graphed
    ema: AveragedModel | None  # with EMA, validation, checkpoints and the final model use the averaged weights
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    batches: ArrayBatches
    augment_rng: torch.Generator
    class_weights: torch.Tensor
    x_calibrate: torch.Tensor  # training images for BatchNorm recalibration
    use_amp: bool
    distillation: Distillation | None = None  # a teacher's answers on fixed views of the training films (`teacher` in the config)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and saved."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def state(self) -> TrainingParts:
        """What a resumed run must get back bit for bit."""
        return TrainingParts(
            self.model, self.optimizer, self.scheduler, self.ema, {"batches": self.batches.generator, "augment": self.augment_rng}
        )


def build_parts(config: Config, data: TrainingData, device: torch.device, progress: bool = False) -> RunParts:
    """Everything a run's steps need, freshly initialised from the config's seed."""
    task, spec = get_task(config.task), model_spec(config.model)
    model = create_model(
        config.model, num_outputs=task.num_outputs, image_size=config.image_size, dropout=config.dropout, crop=config.crop
    ).to(device)
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN) and GPU
    # rank 0 validates, so it alone keeps the averaged weights
    ema = AveragedModel(model, multi_avg_fn=ema_update(config.ema), use_buffers=True) if config.ema and dist.is_main() else None
    use_amp = config.amp and bf16_autocast_helps(device)
    step_model = _step_model(config, model, data.n_train, use_amp, device)
    weights = class_weights(data.y_train.cpu().numpy(), len(task.classes), config.balance).to(device)
    precision = "bf16 autocast" if use_amp else "fp32"
    logger.info(
        f"model: {config.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {precision} on {device.type}); class weights {[round(w, 3) for w in weights.tolist()]}"
    )
    optimizer = make_optimizer(config, model)
    # each process takes its share of every batch: the batch over all of them is config.batch_size
    per_rank_batch = dist.per_rank_batch_size(config.batch_size)
    batches = ArrayBatches(
        data.x_train,
        data.y_train,
        per_rank_batch,
        shuffle=True,
        seed=config.seed,
        drop_last=data.n_train > config.batch_size,
        rank=dist.rank(),
        world_size=dist.world_size(),
    )
    if dist.launched():
        logger.info(f"torchrun: {dist.world_size()} processes, {per_rank_batch} images each per step; rank 0 validates and writes")
    total_steps, warmup = config.epochs * len(batches), int(config.warmup_epochs * len(batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup, config.schedule))
    augment_rng = torch.Generator(device=device).manual_seed(config.seed + dist.rank())  # each process its own draws
    calibrate_idx = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(config.seed))[: config.bn_recalibrate]
    x_calibrate = data.x_train[calibrate_idx.to(device)]
    distillation = distillation_data(config, data, device, progress)
    return RunParts(
        task, spec, model, step_model, ema, optimizer, scheduler, batches, augment_rng, weights, x_calibrate, use_amp, distillation
    )


def _step_model(config: Config, model: torch.nn.Module, n_train: int, use_amp: bool, device: torch.device) -> torch.nn.Module:
    """The model as a training step runs it: under torchrun DDP (BatchNorm stays per process,
    gradients are averaged), compiled with `compile`, or replayed from CUDA graphs on a GPU."""
    graphs = config.cuda_graphs and device.type == "cuda" and not config.compile
    if graphs and dist.launched():
        logger.info("cuda_graphs is off under torchrun: DistributedDataParallel's gradient all-reduce runs outside a recorded graph")
        graphs = False
    step_model = dist.wrap(model)
    if config.compile:
        return torch.compile(step_model)
    if graphs:  # every batch has one shape: drop_last in the batches
        return cuda_graphed(model, (min(config.batch_size, n_train), 1, config.image_size, config.image_size), use_amp)
    return step_model
