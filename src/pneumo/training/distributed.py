"""Data-parallel training under torchrun: which process this is, and the few collectives training needs.

torchrun starts one process per device and tells each its place in the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Without it (WORLD_SIZE unset or 1) every helper
here is the single-process identity, so training keeps one code path.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pneumo.errors import PneumoError

__all__ = [
    "launched",
    "rank",
    "local_rank",
    "world_size",
    "is_main",
    "process_group",
    "local_device",
    "wrap",
    "per_rank_batch_size",
    "all_gather",
    "broadcast",
    "barrier",
    "local_main_first",
]

T = TypeVar("T")

# rank 0 decodes an uncached data set and writes the final report while the others wait;
# NCCL's default (10 minutes) would call that a hang on a large data set
TIMEOUT = timedelta(minutes=30)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def local_rank() -> int:
    """This process's index on its machine: the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", 0))


def launched() -> bool:
    """True in a torchrun job of more than one process (a job of one trains as a plain run)."""
    return world_size() > 1


def is_main() -> bool:
    """True on rank 0, the process that validates, logs and writes the run folder."""
    return rank() == 0


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the torchrun job for the length of a run, and leave it however the run ends (errors, Ctrl-C).

    NCCL for a CUDA device (each process on GPU LOCAL_RANK), gloo on the CPU.
    """
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise PneumoError(
            f"WORLD_SIZE={world_size()} is set but {', '.join(missing)} not: start multi-process training with torchrun (see the README, 'Scaling out')"
        )
    if device.type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise PneumoError(
                f"torchrun started more processes on this machine than it has GPUs ({torch.cuda.device_count()}); give --nproc-per-node {torch.cuda.device_count()} or fewer"
            )
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """`device` pinned to this process's GPU under torchrun (cuda -> cuda:LOCAL_RANK); as given otherwise."""
    return torch.device("cuda", local_rank()) if device.type == "cuda" and launched() else device


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """Under torchrun, DistributedDataParallel around `model`: it starts every process from rank 0's
    weights and averages the gradients over the processes in backward. The model itself otherwise."""
    if not launched():
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def per_rank_batch_size(batch_size: int) -> int:
    """Each process's share of the (global) batch size, which must split evenly, at least 2 apiece for BatchNorm."""
    n = world_size()
    if batch_size % n or batch_size // n < 2:
        suggestion = max(2 * n, round(batch_size / n) * n)
        raise PneumoError(
            f"batch_size {batch_size} is the global batch and must split evenly over the {n} processes, at least 2 images "
            f"each; set it to a multiple of {n} (e.g. --set batch_size={suggestion}) or start fewer processes"
        )
    return batch_size // n


def all_gather(value: T) -> list[T]:
    """Every process's `value` (a CPU tensor or array, anything picklable), in rank order."""
    if not launched():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast(value: T) -> T:
    """Rank 0's `value`, on every process."""
    if not launched():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here."""
    if launched():
        dist.barrier()


@contextmanager
def local_main_first() -> Iterator[None]:
    """Run the block on each machine's first process before its others, which then find what it cached."""
    if local_rank() != 0:
        barrier()
    yield
    if local_rank() == 0:
        barrier()
