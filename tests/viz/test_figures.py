"""pneumo.plots: every figure is written as a valid PNG of a sensible size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.data.preprocess import load_image
from pneumo.viz.figures import batch_grid, confusion_plot, history_panels, roc_plot
from tests.conftest import pick

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> tuple[int, int]:
    """The file is a PNG that decodes, has a plausible size, and is not a blank canvas."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        width, height = im.size
        pixels = np.asarray(im.convert("L"))
    assert 150 <= width <= 4000 and 150 <= height <= 4000
    assert pixels.std() > 5  # something was drawn
    return width, height


def _history(epochs: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e}
        for split in ("train", "val"):
            for metric in ("precision", "recall", "accuracy"):
                row[f"{split}_{metric}"] = float(min(1.0, 0.6 + 0.05 * e + 0.02 * rng.random()))
            row[f"{split}_loss"] = float(1.0 / e)
        rows.append(row)
    return rows


def test_batch_grid(tmp_path: Path, shared_data: Path) -> None:
    files = pick("NORMAL", 3) + pick("PNEUMONIA", 3)
    images = [load_image(f, 64) for f in files]
    out = batch_grid(images, ["NORMAL"] * 3 + ["PNEUMONIA"] * 3, tmp_path / "nested" / "grid.png", columns=4)
    assert out == tmp_path / "nested" / "grid.png"
    width, height = _check_png(out)
    assert width > height  # 4 columns, 2 rows


def test_batch_grid_one_row_vs_four(tmp_path: Path, shared_data: Path) -> None:
    image = load_image(pick("NORMAL", 1)[0], 32)
    w1, h1 = _check_png(batch_grid([image] * 4, ["a"] * 4, tmp_path / "one.png", columns=4))
    w4, h4 = _check_png(batch_grid([image] * 16, ["a"] * 16, tmp_path / "four.png", columns=4))
    assert h4 > 3 * h1
    assert abs(w4 - w1) < 0.2 * w1


def test_history_panels(tmp_path: Path) -> None:
    width, height = _check_png(history_panels(_history(5), tmp_path / "history.png"))
    assert width > 3 * height  # four panels side by side


def test_history_panels_single_epoch(tmp_path: Path) -> None:
    _check_png(history_panels(_history(1), tmp_path / "one_epoch.png"))


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_roc_plot(tmp_path: Path, threshold: float | None) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    p = np.clip(0.3 * y + 0.7 * rng.random(100), 0, 1)
    width, height = _check_png(roc_plot(y, p, tmp_path / "roc.png", threshold=threshold, title="val"))
    assert 0.7 < width / height < 1.4  # a square axis


def test_roc_plot_single_class(tmp_path: Path) -> None:
    _check_png(roc_plot([1, 1, 1], [0.2, 0.5, 0.9], tmp_path / "roc1.png", threshold=0.5))


@pytest.mark.parametrize("classes", [["NORMAL", "PNEUMONIA"], ["normal", "bacteria", "virus"]])
def test_confusion_plot(tmp_path: Path, classes: list[str]) -> None:
    k = len(classes)
    matrix = (np.arange(k * k).reshape(k, k) + 1).tolist()
    _check_png(confusion_plot(matrix, classes, tmp_path / "cm.png"))


def test_confusion_plot_with_empty_row(tmp_path: Path) -> None:
    _check_png(confusion_plot([[0, 0], [3, 5]], ["NORMAL", "PNEUMONIA"], tmp_path / "cm0.png"))


def test_heatmap_layers_leave_cold_regions_clear() -> None:
    from pneumo.viz.figures import CAM_OPACITY, cam_overlay, heatmap_rgba

    heat = np.zeros((8, 8), dtype=np.float32)
    heat[:4] = 1.0
    rgba = heatmap_rgba(heat)
    assert rgba.shape == (8, 8, 4) and rgba.dtype == np.uint8
    assert (rgba[4:, :, 3] == 0).all() and (rgba[:4, :, 3] == 255).all()
    assert rgba[0, 0, 0] > 100 and rgba[0, 0, 2] < 100  # hot is red in jet
    image = np.full((8, 8), 200, dtype=np.uint8)
    overlay = cam_overlay(image, heat)
    assert (overlay[4:] == 200).all()  # no heat: the image as it was
    expected_red = round((1 - CAM_OPACITY) * 200 + CAM_OPACITY * rgba[0, 0, 0])
    assert abs(int(overlay[0, 0, 0]) - expected_red) <= 1


def test_history_panels_mark_the_epoch_the_model_comes_from(tmp_path: Path) -> None:
    from PIL import Image

    def red_pixels(path: Path) -> int:
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
        return int(((abs(rgb[..., 0] - 214) < 30) & (abs(rgb[..., 1] - 39) < 30) & (abs(rgb[..., 2] - 40) < 30)).sum())  # matplotlib's C3

    plain = history_panels(_history(5), tmp_path / "plain.png")
    marked = history_panels(_history(5), tmp_path / "marked.png", chosen=3)
    assert red_pixels(plain) == 0 and red_pixels(marked) > 40  # a dashed line down each of the four panels, and its legend entry
