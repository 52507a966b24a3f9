"""The parts of a training step besides the network: device, class weights, optimiser, learning-rate schedule, EMA."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pneumo.config import Config
from pneumo.errors import PneumoError

__all__ = ["pick_device", "bf16_autocast_helps", "class_weights", "make_optimizer", "lr_factor", "ema_update"]


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; asking for CUDA without one is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise PneumoError("config asks for device 'cuda' but no CUDA GPU is available; use --set device=cpu")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def bf16_autocast_helps(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up here: on CUDA, and on CPUs with native bf16
    arithmetic (AVX512-BF16 or AMX), where oneDNN's bf16 convolutions run ~1.5x faster than
    fp32 (benchmarks/bench_train.py keras). Elsewhere bf16 would be emulated, slower than fp32."""
    if device.type == "cuda":
        return True
    flags = _cpu_flags() if device.type == "cpu" else None
    return bool(flags and {"avx512_bf16", "amx_bf16"} & flags)


@cache
def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, read once (the service asks per heatmap batch);
    None where there is none (not Linux): fp32 is always right."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def class_weights(targets: np.ndarray, n_classes: int, balance: str) -> torch.Tensor:
    """w_c = N / (K * N_c), as in the notebook (K = 2 there); ones when balancing is off."""
    if balance == "none":
        return torch.ones(n_classes)
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    return torch.tensor(len(targets) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The config's optimiser over the model's parameters, with fused kernels: one pass over
    each tensor instead of a few (on 2 CPU cores Adam's step takes a third of the time)."""
    params = list(model.parameters())
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay, fused=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up, then constant or cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


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
