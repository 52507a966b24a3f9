"""pneumo.inference.torch_backend: the bundled PyTorch checkpoint loaded and run on real films, and the
module's own pieces (`class_probabilities` with calibration, the CPU batch size, feature rows, the
input check attached on demand) on a small untrained network where a real one is not needed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.data.preprocess import load_image, resize_image
from pneumo.errors import PneumoError
from pneumo.inference.features import feature_width
from pneumo.inference.loading import bundled_model_dir
from pneumo.inference.torch_backend import (
    CPU_BATCH_PIXELS,
    TorchModel,
    class_probabilities,
    cpu_batch_size,
    feature_rows,
    load_checkpoint,
)
from pneumo.models import create_model
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CheckpointMeta
from tests.conftest import BUNDLED_SIZE, pick

pytestmark = pytest.mark.slow  # whole-network passes over many cases: the full suite runs them, the fast loop leaves them out


@pytest.fixture(scope="module")
def bundled() -> TorchModel:
    return TorchModel.load(bundled_model_dir())


@pytest.fixture(scope="module")
def films(shared_data: Path, bundled: TorchModel) -> np.ndarray:
    """Two NORMAL then two PNEUMONIA real films at the bundled model's size."""
    return np.stack([load_image(f, bundled.image_size) for f in pick("NORMAL", 2, offset=5) + pick("PNEUMONIA", 2, offset=5)])


@pytest.fixture(scope="module")
def small(films: np.ndarray) -> tuple[TorchModel, np.ndarray]:
    """An untrained seed_cnn at 64 px (seeded) and six real films at its size."""
    torch.manual_seed(0)
    net = create_model("seed_cnn", image_size=64).eval()
    meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], 1, 64, 0.5, 0.25, 0.5)
    x = np.stack([resize_image(f, 64) for f in films] + [resize_image(255 - f, 64) for f in films[:2]])
    return TorchModel(net, meta), x


def test_the_bundled_checkpoint_loads_with_its_metadata(bundled: TorchModel) -> None:
    on_disk = json.loads((bundled_model_dir() / "meta.json").read_text())
    assert (bundled.threshold, bundled.classes, bundled.image_size) == (on_disk["threshold"], on_disk["classes"], on_disk["image_size"])
    assert bundled.meta.temperature == on_disk["temperature"] and bundled.meta.architecture == on_disk["architecture"]
    assert bundled.checkpoint == bundled.folder == bundled_model_dir()  # where the other backend finds the same model
    assert not bundled.net.training and bundled.check is None and bundled.feature_check is None  # checks are attached on demand
    assert next(bundled.net.parameters()).device.type == "cpu"


def test_a_checkpoint_loads_from_one_of_its_files_and_through_load_checkpoint(bundled: TorchModel, films: np.ndarray) -> None:
    again = load_checkpoint(bundled_model_dir() / "meta.json")
    assert isinstance(again, TorchModel) and again.folder == bundled_model_dir() and again.meta == bundled.meta
    np.testing.assert_allclose(again.class_probabilities(films[:1]), bundled.class_probabilities(films[:1]), atol=1e-6)


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="is not a pneumo checkpoint"):
        TorchModel.load(tmp_path)
    with pytest.raises(PneumoError, match="is not a pneumo checkpoint"):
        TorchModel.load(tmp_path / "missing")


def test_class_probabilities_of_real_films(bundled: TorchModel, films: np.ndarray) -> None:
    probs = bundled.class_probabilities(films)
    assert probs.shape == (4, 2) and probs.dtype == np.float32
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    p = probs[:, 1]
    assert p[2:].min() > p[:2].max()  # training films of each class, read as their folders say
    assert bundled.class_probabilities(films[:0]).shape == (0, 2)


@pytest.mark.parametrize(
    "bad, why",
    [
        (np.zeros((2, 64, 64), np.uint8), "the wrong size"),
        (np.zeros((2, 224, 224), np.float32), "floats"),
        (np.zeros((224, 224), np.uint8), "one image without its batch axis"),
        (np.zeros((2, 1, 224, 224), np.uint8), "a channel axis"),
    ],
)
def test_images_that_are_not_uint8_at_the_models_size_are_refused(bundled: TorchModel, bad: np.ndarray, why: str) -> None:
    with pytest.raises(PneumoError, match=rf"needs uint8 images \[N, {BUNDLED_SIZE}, {BUNDLED_SIZE}\].*load_image\(path, {BUNDLED_SIZE}\)"):
        bundled.class_probabilities(bad)


def test_the_answer_does_not_depend_on_the_batch_or_the_array_type(small: tuple[TorchModel, np.ndarray]) -> None:
    model, x = small
    whole = model.class_probabilities(x)
    np.testing.assert_allclose(model.class_probabilities(x, batch_size=1), whole, atol=1e-5)
    np.testing.assert_allclose(model.class_probabilities(x, batch_size=4), whole, atol=1e-5)
    np.testing.assert_allclose(model.class_probabilities(torch.from_numpy(x)), whole, atol=1e-6)  # a tensor is taken as it is


def test_a_network_in_training_mode_is_run_in_eval_mode_and_left_as_it_was(small: tuple[TorchModel, np.ndarray]) -> None:
    model, x = small
    expected = model.class_probabilities(x)
    model.net.train()
    try:
        again = class_probabilities(model.net, x, model.task, model.meta.mean, model.meta.std)
        assert model.net.training
    finally:
        model.net.eval()
    np.testing.assert_allclose(again, expected, atol=1e-6)  # dropout and batch statistics off while predicting


def test_temperature_and_logit_offset_act_on_the_log_odds(small: tuple[TorchModel, np.ndarray]) -> None:
    model, x = small
    args = (model.net, x, model.task, model.meta.mean, model.meta.std)
    p = class_probabilities(*args)[:, 1].astype(np.float64)
    logit = np.log(p) - np.log1p(-p)
    cooled = class_probabilities(*args, temperature=2.0)[:, 1]
    shifted = class_probabilities(*args, logit_offset=-1.5)[:, 1]
    np.testing.assert_allclose(cooled, 1 / (1 + np.exp(-logit / 2)), atol=1e-5)
    np.testing.assert_allclose(shifted, 1 / (1 + np.exp(-(logit - 1.5))), atol=1e-5)
    calibrated = TorchModel(model.net, model.meta.replace(temperature=2.0, logit_offset=0.5))
    np.testing.assert_allclose(calibrated.class_probabilities(x)[:, 1], 1 / (1 + np.exp(-(logit / 2 + 0.5))), atol=1e-5)


def test_cpu_batch_size_keeps_a_batch_within_its_pixel_budget() -> None:
    sides = [1, 16, 64, 128, 150, 180, 224, 256, 300, 512, 1024, 4096]
    sizes = [cpu_batch_size(s) for s in sides]
    assert all(4 <= n <= 16 for n in sizes) and sizes == sorted(sizes, reverse=True)  # fewer films as they grow
    for side, n in zip(sides, sizes):
        if 4 < n < 16:  # not clamped: as many films as the budget holds, and no more
            assert n * side * side <= CPU_BATCH_PIXELS < (n + 1) * side * side
    assert cpu_batch_size(0) == cpu_batch_size(1) == 16  # a degenerate side does not divide by zero


def test_a_cpu_network_never_sees_more_films_at_once_than_the_budget(bundled: TorchModel, films: np.ndarray) -> None:
    seen: list[int] = []
    handle = bundled.net.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    try:
        budget = cpu_batch_size(bundled.image_size)
        x = np.concatenate([films] * (budget // len(films) + 2))[: budget + 2]  # two films more than the budget; batch asked for: 256
        bundled.class_probabilities(x, batch_size=256)
    finally:
        handle.remove()
    assert sum(seen) == budget + 2 and max(seen) <= budget and len(seen) > 1


def test_feature_rows_come_from_the_same_pass_as_the_probabilities(small: tuple[TorchModel, np.ndarray]) -> None:
    model, x = small
    probs, rows = feature_rows(model, x, batch_size=4)
    np.testing.assert_allclose(probs, model.class_probabilities(x), atol=1e-6)
    width = feature_width(model.net)
    assert rows.dtype == np.float64 and rows.shape[0] == len(x) and rows.shape[1] > width and np.isfinite(rows).all()
    _, alone = feature_rows(model, x[2:3])
    np.testing.assert_allclose(alone[0], rows[2], rtol=1e-4, atol=1e-4)  # a film's row does not depend on its batch
    assert not np.allclose(rows[0], rows[-1])  # different films, different rows
    empty_probs, empty_rows = feature_rows(model, x[:0])
    assert empty_probs.shape == (0, 2) and empty_rows.shape == (0, width)


def test_the_input_check_is_attached_on_demand(bundled: TorchModel, films: np.ndarray) -> None:
    checked = bundled.with_feature_check()
    assert checked is not bundled and bundled.check is None  # the loaded model itself is left as it was
    assert checked.feature_check is checked.check and checked.check.has_probe and checked.net is bundled.net
    assert checked.with_feature_check() is checked  # attached once
    probs, scores = checked.probabilities_and_scores(films[:2])
    assert scores.shape == (2, 4) and np.isfinite(scores[:, :2]).all()
    plain_probs, none = bundled.probabilities_and_scores(films[:2])
    assert none is None and np.allclose(plain_probs, probs, atol=1e-6)
    assert not checked.check.flags(scores).any()  # the model's own kind of film passes its check


def test_a_model_without_a_check_stays_as_it_is(small: tuple[TorchModel, np.ndarray], tmp_path: Path) -> None:
    model, x = small
    assert model.folder is None and model.with_feature_check() is model  # built by hand: nowhere to look
    folder = save_checkpoint(tmp_path / "ckpt", model.net, model.meta)
    loaded = TorchModel.load(folder)
    assert loaded.checkpoint == folder and loaded.with_feature_check() is loaded  # saved without features.safetensors
    np.testing.assert_allclose(loaded.class_probabilities(x), model.class_probabilities(x), atol=1e-6)


def test_an_empty_batch_with_the_check_attached_gives_empty_results(bundled: TorchModel, films: np.ndarray) -> None:
    probs, scores = bundled.with_feature_check().probabilities_and_scores(films[:0])
    assert probs.shape == (0, 2) and scores is not None and scores.shape == (0, 4)


def test_a_tensor_that_is_not_the_models_input_is_refused(bundled: TorchModel, films: np.ndarray) -> None:
    """Float pixels in 0..255, another size, or one image without its batch axis: refused, not answered."""
    size = bundled.image_size
    x = torch.from_numpy(films)
    for wrong, given in (
        (x.float(), "float32 tensor"),
        (x[:, : size // 2, : size // 2], f"uint8 tensor [4, {size // 2}, {size // 2}]"),
        (x[0], f"uint8 tensor [{size}, {size}]"),
    ):
        with pytest.raises(PneumoError, match=rf"needs uint8 images \[N, {size}, {size}\]; got a {re.escape(given)}"):
            bundled.class_probabilities(wrong)
