"""Replaying a small network's training step from CUDA graphs, where launching kernels is the bottleneck."""

from __future__ import annotations

import warnings

import torch

from pneumo.models.framing import without_pre_hooks

__all__ = ["cuda_graphed"]


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
        with without_pre_hooks(model):  # a content crop runs before the graph, eagerly
            graphed = torch.cuda.make_graphed_callables(model, (sample,))
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return graphed
