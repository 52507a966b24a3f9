"""pneumo.data.preview: a PNG grid of random images of a split, with their classes as titles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.data.layout import discover
from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.viz import preview as preview_module
from pneumo.viz.preview import preview
from tests.conftest import copy_class_folders


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[np.ndarray], list[str]]]:
    """What preview hands to the plotting function (still writing the file)."""
    calls = []
    real = preview_module.batch_grid

    def spy(images, titles, path, *args, **kwargs):
        calls.append((list(images), list(titles)))
        return real(images, titles, path, *args, **kwargs)

    monkeypatch.setattr(preview_module, "batch_grid", spy)
    return calls


def test_preview_writes_a_png_grid(tmp_path: Path, small_folder: Path) -> None:
    out = preview(small_folder, tmp_path / "grid.png", n=8, size=64)
    assert out == tmp_path / "grid.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        width, height = im.size
        pixels = np.asarray(im.convert("L"))
    assert 300 <= width <= 2000 and 150 <= height <= 2000
    assert width > height  # 8 images in 4 columns: 2 rows
    assert pixels.std() > 10


def test_preview_draws_real_images_with_their_classes(tmp_path: Path, small_folder: Path, captured) -> None:
    preview(small_folder, tmp_path / "grid.png", n=16, size=64, seed=3)
    ((images, titles),) = captured
    assert len(images) == len(titles) == 16
    assert all(im.shape == (64, 64) and im.dtype == np.uint8 for im in images)
    records = discover(small_folder).split(None)
    by_pixels = {load_image(r.path, 64).tobytes(): r for r in records}
    for image, title in zip(images, titles):
        record = by_pixels[image.tobytes()]  # each tile is one of the dataset's images...
        assert title.startswith(record.label)  # ...titled with its own class
        if record.pathogen:
            assert f"({record.pathogen})" in title
    assert len({im.tobytes() for im in images}) == 16  # drawn without replacement


def test_preview_is_seeded(tmp_path: Path, small_folder: Path, captured) -> None:
    for seed in (0, 0, 1):
        preview(small_folder, tmp_path / f"grid{seed}.png", n=4, size=32, seed=seed)
    (a, ta), (b, tb), (c, _) = captured
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and ta == tb
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_preview_kaggle_defaults_to_train(tmp_path: Path, kaggle_root: Path, captured) -> None:
    ds = discover(kaggle_root)
    preview(kaggle_root, tmp_path / "train.png", n=12, size=32)
    preview(kaggle_root, tmp_path / "test.png", split="test", n=12, size=32)
    train_pixels = {load_image(r.path, 32).tobytes() for r in ds.split("train")}
    test_pixels = {load_image(r.path, 32).tobytes() for r in ds.split("test")}
    (train_images, _), (test_images, _) = captured
    assert all(im.tobytes() in train_pixels for im in train_images)
    assert all(im.tobytes() in test_pixels for im in test_images)
    assert (tmp_path / "train.png").is_file() and (tmp_path / "test.png").is_file()


def test_preview_of_fewer_images_than_asked(tmp_path: Path, shared_data: Path, captured) -> None:
    root = copy_class_folders(tmp_path / "few", {"NORMAL": 2, "PNEUMONIA": 3})
    preview(root, tmp_path / "all.png", n=16, size=32)
    ((images, titles),) = captured
    assert len(images) == 5  # every image, once
    assert len({im.tobytes() for im in images}) == 5
    assert sorted(t.split()[0] for t in titles) == ["NORMAL"] * 2 + ["PNEUMONIA"] * 3


def test_preview_unknown_split(tmp_path: Path, kaggle_root: Path) -> None:
    with pytest.raises(PneumoError, match="no split 'val'"):
        preview(kaggle_root, tmp_path / "x.png", split="val")
    assert not (tmp_path / "x.png").exists()
