"""Exact BatchNorm statistics for the weights being validated."""

from __future__ import annotations

import torch

from pneumo.data.preprocess import normalise

__all__ = ["recalibrate_batchnorm"]


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
