"""Training: the loop (`loop`, read it top to bottom), its data (`data`), the parts it builds
(`parts`, `optim`, `batchnorm`, `cuda_graphs`), the run folder (`run_dir`), the resumable
state (`state`), the end-of-run report (`report`) and torchrun support (`distributed`).

Example:
    >>> from pneumo.training import train
    >>> result = train(load_config("seed", ["epochs=1"]), out="runs/seed")
"""

from __future__ import annotations

from pneumo.training.loop import TrainResult, train

__all__ = ["train", "TrainResult"]
