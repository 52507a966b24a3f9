"""Framing normalisation: crop each film to its content box before the network sees it.

Films reach the model at many framings: with black margins, padded to a square, cut tighter
or looser. A network fed the raw square can learn where the body sits in the frame instead of
what the lungs show. `ContentCrop` finds, per image, the rows and columns that hold the film
(mean intensity above a quarter of the brightest row's or column's: black margins, padding and
the dark air beside the body fall out) and resamples that box back to the full square, so the body fills the input the same way
whatever the framing. No pretrained network, no parameters: a few reductions and two matrix
products, on any device and in an ONNX graph alike.

It runs as a forward pre-hook on the network (`with_content_crop`), so training, evaluation,
the input checks, Grad-CAM and the export all see the cropped input without knowing of it,
and the weights' keys stay those of the bare network.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CROPS", "ContentCrop", "with_content_crop", "content_crop_of", "without_pre_hooks"]

# the values a config's or checkpoint's `crop` takes
CROPS = ("none", "content")


class ContentCrop(nn.Module):
    """Resample each image's content box to the whole square; input and output are normalised batches [B, 1, S, S].

    Args:
        mean, std: the network's normalisation, to read the raw intensity back.
        level: a row (column) is content when its mean is above `level` x the brightest row's (column's).
        min_fraction: a box narrower than this share of the side is not trusted; the image is kept whole.
    """

    def __init__(self, mean: float, std: float, level: float = 0.25, min_fraction: float = 0.5) -> None:
        super().__init__()
        self.mean, self.std, self.level, self.min_fraction = float(mean), float(std), float(level), float(min_fraction)

    def boxes(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 4] float: top, bottom, left, right of each content box, in pixels, bottom and right exclusive."""
        return self.raw_boxes(x[:, 0].float() * self.std + self.mean)

    def raw_boxes(self, raw: torch.Tensor) -> torch.Tensor:
        """`boxes` of un-normalised images [B, S, S] in 0..1."""
        side = int(raw.shape[-1])  # a constant of the network at its input size, also in an ONNX graph
        rows, cols = raw.mean(dim=2), raw.mean(dim=1)  # [B, S] each
        # relative to the brightest row or column, which a margin around the film does not change
        inside_rows = rows > self.level * rows.amax(dim=1, keepdim=True)
        inside_cols = cols > self.level * cols.amax(dim=1, keepdim=True)
        return torch.cat([self._span(inside_rows, side), self._span(inside_cols, side)], dim=1)

    def _span(self, inside: torch.Tensor, side: int) -> torch.Tensor:
        """[B, 2]: first and one past the last True of each row of `inside`, or 0 and side when too narrow."""
        index = torch.arange(side, device=inside.device, dtype=torch.float32).unsqueeze(0)
        first = torch.where(inside, index, torch.full_like(index, float(side))).amin(dim=1)
        last = torch.where(inside, index, torch.full_like(index, -1.0)).amax(dim=1) + 1
        keep = (last - first) >= self.min_fraction * side
        first = torch.where(keep, first, torch.zeros_like(first))
        last = torch.where(keep, last, torch.full_like(last, float(side)))
        return torch.stack([first, last], dim=1)

    @staticmethod
    def _weights(start: torch.Tensor, stop: torch.Tensor, side: int, dtype: torch.dtype) -> torch.Tensor:
        """[B, side, side] bilinear weights that stretch source pixels start..stop over `side` output pixels."""
        start, stop = start.view(-1, 1), stop.view(-1, 1)
        out = torch.arange(side, device=start.device, dtype=torch.float32).view(1, side)
        centre = start + (out + 0.5) * ((stop - start) / side) - 0.5  # where each output pixel samples the film
        return _tent(torch.minimum(torch.maximum(centre, start), stop - 1), side).to(dtype)

    @staticmethod
    def _inverse_weights(start: torch.Tensor, stop: torch.Tensor, side: int) -> torch.Tensor:
        """[B, side, side] weights that put `side` cropped pixels back over source pixels start..stop (zero outside)."""
        start, stop = start.view(-1, 1), stop.view(-1, 1)
        src = torch.arange(side, device=start.device, dtype=torch.float32).view(1, side)
        centre = (src + 0.5 - start) * (side / (stop - start)) - 0.5  # where each film pixel samples the crop
        inside = (src >= start) & (src < stop)
        return _tent(centre.clamp(0, side - 1), side) * inside.unsqueeze(2)

    def uncrop(self, maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Maps [B, S, S] over the cropped input (a Grad-CAM heatmap) back onto the films' own pixels; zero outside each box."""
        side = maps.shape[-1]
        rows = self._inverse_weights(boxes[:, 0], boxes[:, 1], side)
        cols = self._inverse_weights(boxes[:, 2], boxes[:, 3], side)
        with torch.autocast(maps.device.type, enabled=False):  # float32 maps, also inside a caller's bf16 autocast
            return rows @ maps.float() @ cols.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box, side = self.boxes(x), int(x.shape[-1])
        along_rows = self._weights(box[:, 0], box[:, 1], side, x.dtype)  # [B, S_out, S_in]
        along_cols = self._weights(box[:, 2], box[:, 3], side, x.dtype)
        cropped = along_rows @ x[:, 0] @ along_cols.transpose(1, 2)
        return cropped.unsqueeze(1).contiguous(memory_format=torch.channels_last)


def _tent(centre: torch.Tensor, side: int) -> torch.Tensor:
    """[B, N, side] linear-interpolation weights of pixels 0..side-1 for sample positions `centre` [B, N]."""
    pixels = torch.arange(side, device=centre.device, dtype=torch.float32)
    return torch.relu(1 - (centre.unsqueeze(2) - pixels).abs())


def _crop_input(module: nn.Module, args: tuple) -> tuple:
    return (module.content_crop(args[0]), *args[1:])


def with_content_crop(net: nn.Module, mean: float, std: float) -> nn.Module:
    """`net`, cropping its input to the content box first (see the module's docstring); returns `net`."""
    net.content_crop = ContentCrop(mean, std)  # a child without parameters or buffers: the state dict is unchanged
    net.register_forward_pre_hook(_crop_input)
    return net


def content_crop_of(net: nn.Module) -> ContentCrop | None:
    """The crop `with_content_crop` gave `net`, if any."""
    crop = getattr(net, "content_crop", None)
    return crop if isinstance(crop, ContentCrop) else None


class without_pre_hooks:
    """Lift a module's forward pre-hooks for a block (CUDA graph recording refuses hooked modules), then put them back."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.hooks = module, {}

    def __enter__(self) -> nn.Module:
        self.hooks = dict(self.module._forward_pre_hooks)
        self.module._forward_pre_hooks.clear()
        return self.module

    def __exit__(self, *exc: object) -> None:
        self.module._forward_pre_hooks.update(self.hooks)
