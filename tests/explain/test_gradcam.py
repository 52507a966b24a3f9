"""pneumo.explain and plots.cam_figure: Grad-CAM heatmaps on real images, and the user's model left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.explain.gradcam import explain_files, grad_cam
from pneumo.inference.predict import load_model
from pneumo.inference.torch_backend import TorchModel, load_checkpoint
from pneumo.models import create_model
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CheckpointMeta
from pneumo.tasks import get_task
from pneumo.viz.figures import cam_figure
from tests.conftest import pick


@pytest.fixture(scope="module")
def bundled() -> TorchModel:
    return load_model(None, backend="torch")


@pytest.fixture(scope="module")
def xrays(shared_data: Path) -> dict[str, list[Path]]:
    return {"PNEUMONIA": pick("PNEUMONIA", 3), "NORMAL": pick("NORMAL", 2)}


def _images(files: list[Path], size: int) -> np.ndarray:
    return np.stack([load_image(f, size) for f in files])


def _hooks(net: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules())


def test_heatmaps_are_maps_of_evidence(bundled: TorchModel, xrays: dict[str, list[Path]]) -> None:
    images = _images(xrays["PNEUMONIA"] + xrays["NORMAL"], bundled.image_size)
    maps = grad_cam(bundled, images)
    assert maps.shape == (5, bundled.image_size, bundled.image_size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    for m in maps[:3]:  # pneumonia images: some region raises P(pneumonia), so the map has structure
        assert m.max() == pytest.approx(1.0) and m.std() > 0.05
    assert np.abs(maps[0] - maps[1]).mean() > 0.05  # the map depends on the image
    alone = grad_cam(bundled, images[1:2])
    np.testing.assert_allclose(alone[0], maps[1], atol=1e-4)  # batching does not mix images


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> TorchModel:
    """A ResNet-18 at half width with seeded fresh weights: Grad-CAM's arithmetic does not need a trained one."""
    torch.manual_seed(0)
    meta = CheckpointMeta(
        "resnet18_half", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=224, mean=0.5, std=0.25, threshold=0.5
    )
    return load_checkpoint(save_checkpoint(tmp_path_factory.mktemp("resnet"), create_model("resnet18_half", image_size=224), meta))


def test_target_is_the_last_conv_stage(resnet: TorchModel, xrays: dict[str, list[Path]]) -> None:
    """Same result as Grad-CAM computed by hand on ResNet's layer4."""
    bundled = resnet
    images = _images(xrays["PNEUMONIA"][:2], bundled.image_size)
    x = (torch.from_numpy(images).float()[:, None] / 255 - bundled.meta.mean) / bundled.meta.std
    kept = {}
    handle = bundled.net.layer4.register_forward_hook(lambda m, i, o: kept.update(act=o))
    logits = bundled.net(x.requires_grad_(True))
    handle.remove()
    (grads,) = torch.autograd.grad(logits[:, 0].sum(), kept["act"])
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * kept["act"]).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(224, 224), mode="bilinear", align_corners=False)[:, 0].detach()
    cam = (cam - cam.amin(dim=(1, 2), keepdim=True)) / (cam.amax(dim=(1, 2), keepdim=True) - cam.amin(dim=(1, 2), keepdim=True))
    np.testing.assert_allclose(grad_cam(bundled, images), cam.numpy(), atol=1e-4)


def test_the_model_is_left_as_it_was(bundled: TorchModel, xrays: dict[str, list[Path]]) -> None:
    images = _images(xrays["PNEUMONIA"][:2], bundled.image_size)
    before = {k: v.clone() for k, v in bundled.net.state_dict().items()}  # includes batch-norm running stats
    flags = [p.requires_grad for p in bundled.net.parameters()]
    hooks = _hooks(bundled.net)  # the model's own (a content crop's pre-hooks), none of Grad-CAM's
    expected = grad_cam(bundled, images)
    assert _hooks(bundled.net) == hooks and torch.is_grad_enabled()
    with torch.no_grad():  # the caller's autograd mode comes back, whichever it was
        np.testing.assert_allclose(grad_cam(bundled, images), expected, atol=1e-6)
        assert not torch.is_grad_enabled()
    assert all(p.grad is None for p in bundled.net.parameters())
    assert [p.requires_grad for p in bundled.net.parameters()] == flags
    assert not bundled.net.training
    after = bundled.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    try:  # a model in train mode and with frozen weights: explained in eval mode, then given back unchanged
        bundled.net.train()
        for p in bundled.net.parameters():
            p.requires_grad_(False)
        np.testing.assert_allclose(grad_cam(bundled, images), expected, atol=1e-5)
        assert bundled.net.training and not any(p.requires_grad for p in bundled.net.parameters())
    finally:
        bundled.net.eval()
        for p, flag in zip(bundled.net.parameters(), flags):
            p.requires_grad_(flag)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("task", ["binary", "pathogen"])
def test_a_fresh_seed_cnn_checkpoint(task: str, tmp_path: Path, xrays: dict[str, list[Path]]) -> None:
    torch.manual_seed(0)
    classes = list(get_task(task).classes)
    outputs = 1 if task == "binary" else len(classes)
    meta = {
        "architecture": "seed_cnn",
        "task": task,
        "classes": classes,
        "num_outputs": outputs,
        "image_size": 180,
        "mean": 0.0,
        "std": 1.0,
        "threshold": 0.5,
    }
    model = load_checkpoint(
        save_checkpoint(tmp_path / "ckpt", create_model("seed_cnn", num_outputs=outputs, image_size=180), CheckpointMeta(**meta))
    )
    maps = grad_cam(model, _images(xrays["PNEUMONIA"][:2] + xrays["NORMAL"][:1], 180))
    assert maps.shape == (3, 180, 180) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert _hooks(model.net) == 0


def test_images_of_the_wrong_size_are_a_user_error(bundled: TorchModel) -> None:
    size = bundled.image_size
    with pytest.raises(PneumoError, match=rf"uint8 images \[N, {size}, {size}\]"):
        grad_cam(bundled, np.zeros((2, size + 20, size + 20), dtype=np.uint8))


def test_explain_files_writes_one_figure_per_file(bundled: TorchModel, xrays: dict[str, list[Path]], tmp_path: Path) -> None:
    source = xrays["PNEUMONIA"][0]
    twin = tmp_path / "other" / source.name  # same name, another folder
    twin.parent.mkdir()
    shutil.copy(source, twin)
    written = explain_files([source, xrays["NORMAL"][0], twin], model=bundled, out_dir=tmp_path / "cams")
    assert [p.name for p in written] == [f"{source.stem}_cam.png", f"{xrays['NORMAL'][0].stem}_cam.png", f"{source.stem}-2_cam.png"]
    for path in written:
        with Image.open(path) as im:
            assert im.format == "PNG"
            width, height = im.size
            pixels = np.asarray(im.convert("L"))
        assert 500 <= width <= 3000 and 250 <= height <= 2000 and width > height  # two panels side by side
        assert pixels.std() > 5


def test_cam_figure_stretches_the_heatmap_over_any_image(tmp_path: Path) -> None:
    image = np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))  # [200, 300], not square
    heatmap = np.outer(np.hanning(7), np.hanning(7))
    out = cam_figure(image, heatmap, 0.83, "PNEUMONIA", 0.71, tmp_path / "sub" / "fig.png", title="a.jpeg")
    assert out == tmp_path / "sub" / "fig.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]


def test_a_cropping_models_heatmap_lies_on_the_film_not_on_its_margin(tmp_path: Path, xrays: dict[str, list[Path]]) -> None:
    """With `crop: content` the network sees the content box stretched to the square; its map is put back over the film."""
    from pneumo.evaluation.robustness import apply_shift

    torch.manual_seed(0)
    meta = CheckpointMeta(
        "resnet18_half", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=224, mean=0.5, std=0.25, threshold=0.5, crop="content"
    )
    model = load_checkpoint(save_checkpoint(tmp_path, create_model("resnet18_half", image_size=224, crop="content"), meta))
    framed = apply_shift(_images(xrays["PNEUMONIA"][:2], 224), "looser (15% black margin)")  # a black frame of 26 px each side
    maps = grad_cam(model, framed)
    margin = 24
    assert (
        maps[:, :margin].max() == 0 and maps[:, -margin:].max() == 0 and maps[:, :, :margin].max() == 0 and maps[:, :, -margin:].max() == 0
    )
    assert all(m.max() == pytest.approx(1.0) for m in maps)  # the evidence is on the film
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the service draws heatmaps on CPUs with native bf16
        in_bf16 = grad_cam(model, framed)
    assert in_bf16.dtype == np.float32 and in_bf16[:, :margin].max() == 0
