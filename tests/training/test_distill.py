"""Distillation: the teacher's answers on fixed views of the training films, cached, and the loss that learns from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pneumo.config import load_config
from pneumo.errors import PneumoError
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CheckpointMeta
from pneumo.models.registry import create_model
from pneumo.tasks import BINARY, PATHOGEN
from pneumo.training.data import decode_training_data, split_training_records
from pneumo.training.distill import Distillation, distillation_data
from pneumo.training.loop import train


def test_the_distillation_loss_is_the_soft_cross_entropy_to_the_teacher() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5]], requires_grad=True)
    teacher = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])
    weights = torch.tensor([1.0, 2.0, 1.0])
    loss = BINARY.distillation_loss(logits, teacher, weights, temperature=1.0)
    expected = (weights * F.binary_cross_entropy_with_logits(logits[:, 0], teacher[:, 1], reduction="none")).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    # the gradient moves each logit towards the teacher's: w (sigmoid(z) - p_teacher) / N, up for the first (0.88 < 0.9), down for the others
    np.testing.assert_allclose(
        logits.grad[:, 0].numpy(), (weights * (torch.sigmoid(logits[:, 0]) - teacher[:, 1]) / 3).detach().numpy(), rtol=1e-5
    )
    assert logits.grad[0, 0] < 0 < logits.grad[1, 0]
    # a softened teacher (T = 4) asks for a softened student; the T^2 keeps the gradients' scale
    at_t4 = BINARY.distillation_loss(torch.tensor([[8.0]]), torch.tensor([[0.12, 0.88]]), torch.ones(1), temperature=4.0)
    assert at_t4.item() == pytest.approx(
        16 * F.binary_cross_entropy_with_logits(torch.tensor(2.0), torch.sigmoid(torch.logit(torch.tensor(0.88)) / 4)).item(), rel=1e-4
    )
    three = PATHOGEN.distillation_loss(torch.zeros(2, 3), torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]]), torch.ones(2))
    assert three.item() == pytest.approx(np.log(3), rel=1e-4)  # a uniform student against any teacher: log 3 per film


@pytest.fixture(scope="module")
def unseen_folder(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """60 + 60 films the bundled model (the teacher) validated on and never trained on, in class folders:
    a student's validation carved from them is honest."""
    import json
    import shutil

    from pneumo.data.cache import file_digests
    from pneumo.evaluation.overlap import DIGEST_CHARS
    from pneumo.inference.loading import bundled_model_dir
    from tests.conftest import pick

    seen = set(json.loads((bundled_model_dir() / "training_films.json").read_text())["train"])
    root = tmp_path_factory.mktemp("unseen") / "images"
    for label in ("NORMAL", "PNEUMONIA"):
        files = pick(label, 1300)
        unseen = [f for f, d in zip(files, file_digests(files)) if d[:DIGEST_CHARS] not in seen][:60]
        (root / label).mkdir(parents=True)
        for f in unseen:
            shutil.copy(f, root / label / f.name)
    return root


@pytest.fixture(scope="module")
def config(unseen_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    return load_config(
        "cpu",
        [f"data={unseen_folder}", "image_size=64", "epochs=3", "teacher=bundled", "distill_views=2", f"cache_dir={cache}", "outliers=none"],
    )


def test_a_teacher_that_trained_on_the_validation_films_is_refused(small_folder: Path, config, tmp_path: Path) -> None:
    from dataclasses import replace

    leaky = replace(config, data=str(small_folder))  # films of the teacher's own training split
    train_records, val = split_training_records(leaky)
    data = decode_training_data(leaky, train_records, val, torch.device("cpu"), False)
    with pytest.raises(PneumoError, match=r"the teacher bundled trained on \d+ of this run's \d+ validation films.*--set split_seed=0"):
        distillation_data(leaky, data, torch.device("cpu"), False)


def test_the_teachers_answers_are_made_once_for_fixed_views_and_then_read_back(config, pneumo_log: pytest.LogCaptureFixture) -> None:
    train_records, val = split_training_records(config)
    data = decode_training_data(config, train_records, val, torch.device("cpu"), False)
    first = distillation_data(config, data, torch.device("cpu"), False)
    assert "answering for 2 fixed views" in pneumo_log.messages[-1]
    assert first.views.shape == (2, data.n_train, 64, 64) and first.views.dtype == torch.uint8
    assert first.probabilities.shape == (2, data.n_train, 2) and torch.allclose(
        first.probabilities.sum(-1), torch.ones(2, data.n_train), atol=1e-5
    )
    assert not torch.equal(first.views[0], first.views[1])  # two different augmentations
    # the teacher tells the classes apart on its views
    y = data.y_train.numpy()
    p = first.probabilities[0, :, 1].numpy()
    assert p[y == 1].mean() > p[y == 0].mean() + 0.3
    again = distillation_data(config, data, torch.device("cpu"), False)
    assert (
        "from the cache" in pneumo_log.messages[-1]
        and torch.equal(again.views, first.views)
        and torch.equal(again.probabilities, first.probabilities)
    )
    # epoch e shows film i its view (e + i) mod V
    idx = torch.tensor([0, 1, 2])
    views, probs = first.batch(1, idx)
    assert (
        torch.equal(views[0], first.views[1, 0])
        and torch.equal(views[1], first.views[0, 1])
        and torch.equal(probs[2], first.probabilities[1, 2])
    )
    assert distillation_data(load_config("cpu", [f"data={config.data}"]), data, torch.device("cpu"), False) is None  # teacher: none


def test_a_teacher_of_another_task_or_no_teacher_at_all_is_refused(config, tmp_path: Path) -> None:
    meta = CheckpointMeta(
        "seed_cnn", "pathogen", ["normal", "bacteria", "virus"], num_outputs=3, image_size=64, mean=0.0, std=1.0, threshold=0.5
    )
    other = save_checkpoint(tmp_path / "pathogen", create_model("seed_cnn", num_outputs=3, image_size=64), meta)
    from pneumo.training.distill import load_teacher

    with pytest.raises(PneumoError, match="pathogen model; a binary student needs a teacher of its own task"):
        load_teacher(str(other), "binary")
    with pytest.raises(PneumoError, match="does not exist"):
        load_teacher(str(tmp_path / "nope"), "binary")


def test_a_run_learns_from_its_teacher_and_keeps_its_operating_point(config, tmp_path: Path) -> None:
    from dataclasses import replace

    from pneumo.inference.loading import load_model

    result = train(replace(config, threshold="teacher"), out=tmp_path / "run", progress=False, n_boot=50)
    assert result.report["distillation"]["teacher"].startswith("bundled") and result.report["distillation"]["views"] == 2
    teacher_threshold = load_model(backend="torch").threshold
    assert result.report["threshold"] == result.report["distillation"]["teacher_threshold"] == teacher_threshold
    assert load_model(tmp_path / "run", backend="torch").threshold == teacher_threshold
    # 3 epochs at 64 px on 96 films the teacher never trained on (so no label leaks through it): it learned something
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] and result.report["roc_auc"] > 0.5
    assert isinstance(result.report["distillation"]["weight"], float)
    assert Distillation.__doc__
