"""Feature statistics on real data: the bundled model's distance check, its file, and what it leaves untouched."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

from pneumo.data.layout import discover
from pneumo.data.preprocess import load_image, resize_image
from pneumo.data.split import split_records
from pneumo.errors import PneumoError
from pneumo.inference.features import (
    feature_width,
    FEATURES,
    feature_distance,
    fit_feature_stats,
    load_feature_stats,
    out_of_distribution,
    probabilities_and_distance,
    save_feature_stats,
)
from pneumo.inference.predict import bundled_model_dir, load_model
from pneumo.inference.torch_backend import TorchModel
from pneumo.models import create_model
from pneumo.models.checkpoint import copy_checkpoint
from pneumo.models.meta import CheckpointMeta


@pytest.fixture(scope="module")
def model() -> TorchModel:
    return load_model(None)


@pytest.fixture(scope="module")
def split_images(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """200 images from the training part of the bundled model's patient split, and 100 from its held-out part."""
    train, val = split_records(discover(shared_data / "chest_xray").split("train"), 0.2, seed=0, by="patient")
    rng = np.random.default_rng(0)
    fit = [train[i] for i in rng.choice(len(train), 200, replace=False)]
    other = [val[i] for i in rng.choice(len(val), 100, replace=False)]
    return tuple(np.stack([load_image(r.path, 224) for r in recs]) for recs in (fit, other))


@pytest.fixture(scope="module")
def stats(model: TorchModel, split_images: tuple[np.ndarray, np.ndarray]) -> dict[str, torch.Tensor]:
    return fit_feature_stats(model, split_images[0])


def test_stats_shapes(model: TorchModel, stats: dict[str, torch.Tensor]) -> None:
    width = feature_width(model.net)  # 256 per ResNet-18 at half width; an ensemble's side by side
    assert width % 256 == 0 and stats["mean"].shape == (width,) and stats["precision"].shape == (width, width)
    assert stats["threshold"].shape == () and float(stats["threshold"]) > 0
    assert torch.allclose(stats["precision"], stats["precision"].T, atol=1e-4)


def test_other_training_images_mostly_pass(model: TorchModel, stats: dict, split_images: tuple[np.ndarray, np.ndarray]) -> None:
    flagged = out_of_distribution(feature_distance(model, stats, split_images[1]), stats)
    assert flagged.sum() <= 5, f"{flagged.sum()} of 100 held-out training-like images flagged"


def _document() -> np.ndarray:
    page = Image.new("L", (850, 1100), 255)
    draw = ImageDraw.Draw(page)
    for y in range(100, 1000, 28):
        draw.text((80, y), "the quick brown fox jumps over the lazy dog " * 2, fill=0, font_size=18)
    return resize_image(np.asarray(page), 224)


def test_non_xrays_are_flagged(model: TorchModel, stats: dict, split_images: tuple[np.ndarray, np.ndarray]) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (1, 224, 224), dtype=np.uint8)
    photo = resize_image(np.asarray(Image.fromarray(load_sample_images().images[1]).convert("L")), 224)[None]
    x = np.concatenate([noise, photo, _document()[None], 255 - split_images[1][:2]])
    assert out_of_distribution(feature_distance(model, stats, x), stats).all()


def test_one_pass_gives_the_models_probabilities(model: TorchModel, stats: dict, split_images: tuple[np.ndarray, np.ndarray]) -> None:
    x = split_images[1][:16]
    probs, distances = probabilities_and_distance(model, stats, x, batch_size=5)
    np.testing.assert_allclose(probs, model.class_probabilities(x), atol=1e-6)
    np.testing.assert_allclose(distances, feature_distance(model, stats, x), rtol=1e-5)
    assert distances.shape == (16,) and distances.dtype == np.float64


def test_features_file_round_trips(tmp_path: Path, stats: dict) -> None:
    folder = copy_checkpoint(bundled_model_dir(), tmp_path / "model")
    assert load_feature_stats(folder) is not None  # the bundled model's statistics come along
    (folder / FEATURES).unlink()
    assert load_feature_stats(folder) is None
    path = save_feature_stats(stats, folder)
    width = stats["mean"].shape[0]
    assert path == folder / FEATURES and path.stat().st_size < 4 * (width * width + width) + 10_000  # float32, nothing else
    loaded = load_feature_stats(folder)
    assert loaded is not None and set(loaded) == {"mean", "precision", "threshold"}
    for key in loaded:
        assert torch.equal(loaded[key], stats[key])
    assert load_feature_stats(tmp_path) is not None  # a run folder holding model/ works too

    shutil.copy(path, tmp_path / "good")
    path.write_bytes((tmp_path / "good").read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PneumoError, match="damaged"):
        load_feature_stats(folder)

    shutil.copy(tmp_path / "good", path)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "weights_sha256": "0" * 64}))
    with pytest.raises(PneumoError, match="other weights"):
        load_feature_stats(folder)


def test_damaged_stats_are_refused(tmp_path: Path, stats: dict) -> None:
    folder = copy_checkpoint(bundled_model_dir(), tmp_path)
    (folder / FEATURES).unlink()
    with pytest.raises(PneumoError, match="shapes"):
        save_feature_stats({**stats, "precision": stats["precision"][:10]}, folder)
    with pytest.raises(PneumoError, match="non-finite"):
        save_feature_stats({**stats, "mean": stats["mean"] * float("nan")}, folder)
    assert not (folder / FEATURES).exists()


def test_model_is_left_as_it_was(split_images: tuple[np.ndarray, np.ndarray]) -> None:
    model = load_model(None)
    model.net.train()  # even a model left in training mode: features come from eval mode, and it stays in training mode
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    stats = fit_feature_stats(model, split_images[0][:40])
    feature_distance(model, stats, split_images[1][:4])
    assert model.net.training
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.net.modules())


def test_seed_cnn_features_and_refitting_guard(split_images: tuple[np.ndarray, np.ndarray], stats: dict) -> None:
    net = create_model("seed_cnn", image_size=64).eval()
    meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=64, mean=0.0, std=1.0, threshold=0.5)
    small = TorchModel(net, meta)
    x = np.stack([resize_image(image, 64) for image in split_images[0][:40]])
    seed_stats = fit_feature_stats(small, x)
    assert seed_stats["mean"].shape == (64,)
    with pytest.raises(PneumoError, match="fitted for another model"):
        feature_distance(small, stats, x[:2])
    with pytest.raises(PneumoError, match="at least"):
        fit_feature_stats(small, x[:5])
