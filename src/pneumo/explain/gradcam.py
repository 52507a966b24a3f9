"""Grad-CAM: where in an image the evidence for PNEUMONIA lies, for any registry model.

The target layer is found, not configured: the last module whose output is a spatial
feature map (4-D, larger than 1 x 1), i.e. the last convolutional stage before global
pooling (`layer4` of a ResNet, `features` of seed_cnn). The user's model is left as it was:
hooks are removed, eval/train mode restored, parameters' gradients never touched.

Example:
    >>> from pneumo.inference.loading import load_model
    >>> heatmaps = grad_cam(load_model(None, backend="torch"), images)        # images: uint8 [N, 224, 224]
    >>> explain_files(["xray.jpeg"], out_dir="cams")         # -> [PosixPath('cams/xray_cam.png')]
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable
from weakref import WeakKeyDictionary

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pneumo.data.preprocess import check_image_batch, load_image, normalise
from pneumo.errors import PneumoError
from pneumo.inference.base import Model
from pneumo.inference.loading import load_model
from pneumo.inference.torch_backend import TorchModel, net_lock
from pneumo.models.framing import ContentCrop
from pneumo.models.registry import cam_layer
from pneumo.utils.output_checks import output_folder
from pneumo.utils.walk import expand_paths

__all__ = ["cam_evidence", "grad_cam", "weighted_by_probability", "frame_share", "explain_files"]


_TARGETS: WeakKeyDictionary[nn.Module, nn.Module] = WeakKeyDictionary()  # network -> its explained layer


def _is_map(output: object) -> bool:
    return isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2] * output.shape[-1] > 1


def _target_layer(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """The module whose map is explained: the one the network's spec names (`cam_layer`), else the
    one that produces the last spatial feature map of a forward pass (hooks fire children first, so
    a stage's container wins over its last block; an ensemble's is its last member's), found once per network."""
    target = _TARGETS.get(net)
    if target is None:
        target = cam_layer(net)
    if target is None:
        found: dict[str, nn.Module] = {}

        def keep(module: nn.Module, _inputs: tuple, output: object) -> None:
            if _is_map(output):
                found["module"] = module

        handles = [m.register_forward_hook(keep) for m in net.modules()]
        try:
            with torch.no_grad():
                net(x[:1])
        finally:
            for handle in handles:
                handle.remove()
        if "module" not in found:
            raise PneumoError(f"{type(net).__name__} has no convolutional feature map to explain; Grad-CAM needs a CNN")
        target = _TARGETS[net] = found["module"]
    return target


def _forward_from_last_map(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the network with autograd recording only after its last spatial feature map: the
    layers before it run as plain inference (no activations kept for a backward pass that
    never reaches them), which made a heatmap batch of the bundled pair ~2x faster. Returns the
    logits and that map, a leaf the logits' gradient can be taken against."""
    target = _target_layer(net, x)
    found: dict[str, torch.Tensor] = {}

    def from_here(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        torch.set_grad_enabled(True)  # the rest of the forward pass is recorded; the caller's mode comes back below
        found["map"] = output.detach().requires_grad_(True)
        return found["map"]

    handle = target.register_forward_hook(from_here)
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        handle.remove()
    return logits, found["map"]


def cam_evidence(model: Model, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Grad-CAM evidence for PNEUMONIA, unscaled: ReLU(sum_k w_k A_k) at the image's size, in the
    units of the explained log-odds, so maps of different images compare.

    The explained score is the log-odds of P(pneumonia) = 1 - P(normal): the single logit of a
    binary model, and logsumexp(bacteria, virus) - normal for a pathogen model (so both
    pneumonia classes count, as in `Model.pneumonia_probability`).

    Args:
        model: a loaded checkpoint (`pneumo.inference.loading.load_model(..., backend="torch")`).
        images: uint8 [N, S, S] at the model's image size (`pneumo.data.preprocess.load_image`).
        batch_size: images per forward/backward pass; bounds memory.

    Returns:
        float32 [N, S, S], >= 0.
    """
    size = model.image_size
    images = check_image_batch(images, size, "grad_cam")
    if not isinstance(model, TorchModel):
        raise PneumoError("Grad-CAM needs a PyTorch checkpoint, not an ONNX export: pass --model with a run or checkpoint folder")
    net = model.net
    with net_lock(net):  # hooks and the train/eval mode are the network's: one thread's pass at a time
        return _cam_evidence(model, net, images, batch_size, size)


def _cam_evidence(model: Model, net: nn.Module, images: np.ndarray, batch_size: int, size: int) -> np.ndarray:
    was_training = net.training
    device = next(net.parameters()).device
    out = []
    # the explained network's input crop, if any (an ensemble's is its last member's, whose map is explained)
    crop = next((m for m in reversed(list(net.modules())) if isinstance(m, ContentCrop)), None)
    net.eval()  # batch norm must use its running statistics, dropout must be off
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for start in range(0, len(images), batch_size):
                x = normalise(torch.from_numpy(images[start : start + batch_size]).to(device), model.meta.mean, model.meta.std)
                logits, fmap = _forward_from_last_map(net, x.contiguous(memory_format=torch.channels_last))
                score = model.task.pneumonia_logit(logits.float())
                (grads,) = torch.autograd.grad(score.sum(), fmap)  # images do not interact in eval mode
                weights = grads.mean(dim=(2, 3), keepdim=True)
                cam = F.relu((weights * fmap).sum(dim=1, keepdim=True).detach().float())
                cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
                if crop is not None:  # the map covers the cropped input: put it back on the film
                    cam = crop.uncrop(cam, crop.raw_boxes(torch.from_numpy(images[start : start + batch_size]).to(device).float() / 255))
                out.append(cam.cpu())
    finally:
        net.train(was_training)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, size, size), dtype=np.float32)


def grad_cam(model: Model, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Grad-CAM heatmaps for the PNEUMONIA output, one per image, each scaled to [0, 1]
    (1 = its strongest evidence; all zeros where no region raises the score). See `cam_evidence`."""
    cam = torch.from_numpy(cam_evidence(model, images, batch_size))
    lo = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - lo
    return torch.where(span > 0, (cam - lo) / span.clamp_min(1e-12), torch.zeros_like(cam)).numpy().astype(np.float32)


def weighted_by_probability(heatmaps: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per-image heatmaps [N, S, S] in [0, 1] times each image's P(pneumonia): where the evidence
    lies, as bright as the model is sure. A film called NORMAL at P = 0.001 shows no red."""
    return (np.asarray(heatmaps) * np.asarray(probabilities, dtype=np.float32)[:, None, None]).astype(np.float32)


def frame_share(evidence: np.ndarray, margin: float = 0.12) -> np.ndarray:
    """Per map [N, S, S], the share of its evidence in the outer frame (`margin` x side at every
    edge: 42% of the area at 0.12), where corners, borders, side markers and labels are and the
    lungs are not; NaN for a map with no evidence at all. A model that reads the lungs scores
    low; one that learned the acquisition scores high."""
    evidence = np.asarray(evidence, dtype=np.float64)
    side = evidence.shape[-1]
    m = int(round(margin * side))
    inner = evidence[:, m : side - m, m : side - m].sum(axis=(1, 2))
    total = evidence.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1 - inner / total, np.nan)


def _unique_names(files: list[Path]) -> list[str]:
    """`<stem>_cam.png` per file; repeated stems (same name in two folders) get `-2`, `-3`, ..."""
    seen: dict[str, int] = {}
    names = []
    for f in files:
        n = seen[f.stem] = seen.get(f.stem, 0) + 1
        names.append(f"{f.stem}_cam.png" if n == 1 else f"{f.stem}-{n}_cam.png")
    return names


def explain_files(
    paths: Iterable[str | Path], model: str | Path | Model | None = None, *, out_dir: str | Path, batch_size: int = 16
) -> list[Path]:
    """Write one `<stem>_cam.png` per image file (or per image in a folder): the image, its
    Grad-CAM overlay weighted by P(pneumonia) (`weighted_by_probability`; the colour bar says
    so), and the prediction at the model's threshold.

    Files of the same name from different folders get `<stem>-2_cam.png`, ... in input order;
    figures from an earlier call with the same inputs are replaced.

    Args:
        paths: image files or folders of them, as for `pneumo.inference.predict.predict`.
        model: a checkpoint path, a loaded model, or None for the bundled model.
        out_dir: folder for the PNGs (created if missing; a file or a folder that cannot be written is refused first).
        batch_size: images per Grad-CAM pass.
    """
    from pneumo.viz.figures import cam_figure  # matplotlib only when figures are drawn

    out_dir = output_folder(out_dir, "the Grad-CAM folder")  # a file, device or read-only folder: refused before any work
    loaded = load_model(model, backend="torch")
    files = expand_paths(paths)
    written: list[Path] = []
    names = _unique_names(files)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = np.stack([load_image(f, loaded.image_size) for f in chunk])
        heatmaps = grad_cam(loaded, images, batch_size)
        probabilities = loaded.pneumonia_probability(images)
        heatmaps = weighted_by_probability(heatmaps, probabilities)
        for f, name, image, heatmap, p in zip(chunk, names[start:], images, heatmaps, probabilities):
            written.append(cam_figure(image, heatmap, float(p), loaded.label(float(p)), loaded.threshold, out_dir / name, title=f.name))
    return written
