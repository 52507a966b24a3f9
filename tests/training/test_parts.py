"""The live objects of a run, built from its config and real (decoded) training films: what each knob
of the config turns into, and what comes from the config's seed."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from pneumo.config import Config, load_config
from pneumo.tasks import BINARY, PATHOGEN
from pneumo.training.data import (
    TrainingData,
    decode_training_data,
    split_training_records,
)
from pneumo.training.optim import bf16_autocast_helps, class_weights
from pneumo.training.parts import RunParts, build_parts

pytestmark = pytest.mark.slow  # whole-network passes over many cases: the full suite runs them, the fast loop leaves them out

CPU = torch.device("cpu")
SIZE = 32


def _config(folder: Path, *overrides: str, recipe: str = "seed") -> Config:
    return load_config(recipe, [f"data={folder}", f"image_size={SIZE}", "epochs=2", "batch_size=16", "outliers=none", *overrides])


def _data(config: Config) -> TrainingData:
    train, val = split_training_records(config)
    return decode_training_data(config, train, val, CPU, False)


@pytest.fixture(scope="module")
def data(small_folder: Path) -> TrainingData:
    """The small folder's 120 real films split 96 / 24 and decoded at 32 px."""
    return _data(_config(small_folder))


def _parts(config: Config, data: TrainingData, seed: int = 0) -> RunParts:
    torch.manual_seed(seed)  # as the training loop does before building: the network's initial weights come from it
    return build_parts(config, data, CPU)


def test_the_seed_recipe_becomes_a_plain_step_on_the_cpu(
    small_folder: Path, data: TrainingData, pneumo_log: pytest.LogCaptureFixture
) -> None:
    config = _config(small_folder)
    parts = _parts(config, data)
    assert parts.task is BINARY and parts.spec.name == "seed_cnn"
    assert parts.step_model is parts.model and parts.eval_model is parts.model and parts.ema is None
    assert parts.distillation is None
    assert type(parts.optimizer) is torch.optim.Adam and parts.optimizer.param_groups[0]["eps"] == config.adam_eps
    assert [id(p) for p in parts.optimizer.param_groups[0]["params"]] == [id(p) for p in parts.model.parameters()]
    assert parts.use_amp == (config.amp and bf16_autocast_helps(CPU))
    # the notebook's weights N / (K N_c), from the training split's own counts
    assert torch.equal(parts.class_weights, class_weights(data.y_train.numpy(), 2, "class_weights"))
    # 96 training films in batches of 16, every batch full
    assert data.n_train == 96 and len(parts.batches) == 6 and parts.batches.drop_last and parts.batches.batch_size == 16
    x = torch.rand(3, 1, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    assert parts.model.eval()(x).shape == (3, 1)
    # every 4-d weight is channels-last, as the loop's inputs are
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in parts.model.parameters() if p.dim() == 4)
    assert (
        len(pneumo_log.messages) == 1
        and pneumo_log.messages[0].startswith("model: seed_cnn (")
        and "M parameters" in pneumo_log.messages[0]
        and "on cpu" in pneumo_log.messages[0]
    )
    assert str([round(w, 3) for w in parts.class_weights.tolist()]) in pneumo_log.messages[0]


def test_amp_off_is_fp32_whatever_the_cpu(small_folder: Path, data: TrainingData, pneumo_log: pytest.LogCaptureFixture) -> None:
    parts = _parts(_config(small_folder, "amp=false"), data)
    assert parts.use_amp is False and "fp32 on cpu" in pneumo_log.messages[0]


def test_balance_none_weighs_every_class_alike(small_folder: Path, data: TrainingData) -> None:
    parts = _parts(_config(small_folder, "balance=none"), data)
    assert parts.class_weights.tolist() == [1.0, 1.0]


def test_the_schedule_spans_every_step_of_the_run_after_its_warmup(small_folder: Path, data: TrainingData) -> None:
    """Warm-up and cosine decay are counted in steps: epochs x batches per epoch (2 x 6 here)."""
    config = _config(small_folder, "optimizer=adamw", "lr=0.01", "schedule=cosine", "warmup_epochs=1")
    parts = _parts(config, data)
    lrs = []
    for _ in range(config.epochs * len(parts.batches)):
        lrs.append(parts.optimizer.param_groups[0]["lr"])
        parts.optimizer.step()
        parts.scheduler.step()
    assert lrs[:6] == pytest.approx([0.01 * k / 6 for k in range(1, 7)])  # one epoch of linear warm-up
    assert lrs[6] == pytest.approx(0.01) and all(a > b for a, b in pairwise(lrs[6:]))  # then down at every step
    assert 0 < lrs[-1] < 0.01 * 0.1


def test_the_batches_and_augmentation_draws_come_from_the_config_seed(small_folder: Path, data: TrainingData) -> None:
    """Whatever the global random state, one seed gives one batch order and one stream of augmentation draws."""
    a, b = _parts(_config(small_folder), data, seed=1), _parts(_config(small_folder), data, seed=2)
    other = _parts(_config(small_folder, "seed=5"), data, seed=1)

    def first_batch(parts: RunParts) -> torch.Tensor:
        return next(parts.batches.index_batches())

    assert torch.equal(first_batch(a), first_batch(b)) and not torch.equal(first_batch(a), first_batch(other))
    draws = [torch.rand(8, generator=p.augment_rng) for p in (a, b, other)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    # the network's first weights come from the global state the training loop seeds
    assert not torch.equal(next(a.model.parameters()), next(b.model.parameters()))
    same = _parts(_config(small_folder), data, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), same.model.state_dict().values()))


def test_the_state_a_resumed_run_needs_is_the_live_objects(small_folder: Path, data: TrainingData) -> None:
    parts = _parts(_config(small_folder, "ema=0.9"), data)
    state = parts.state
    assert state.model is parts.model and state.optimizer is parts.optimizer and state.scheduler is parts.scheduler
    assert state.ema is parts.ema
    assert state.generators == {"batches": parts.batches.generator, "augment": parts.augment_rng}


def test_with_ema_the_averaged_weights_are_validated(small_folder: Path, data: TrainingData) -> None:
    parts = _parts(_config(small_folder, "ema=0.9"), data)
    assert isinstance(parts.ema, AveragedModel)
    assert parts.eval_model is parts.ema.module and parts.eval_model is not parts.model
    assert all(torch.equal(a, b) for a, b in zip(parts.ema.module.state_dict().values(), parts.model.state_dict().values()))


def test_only_the_process_that_validates_keeps_an_ema(small_folder: Path, data: TrainingData, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pneumo.training.distributed.is_main", lambda: False)
    parts = _parts(_config(small_folder, "ema=0.9"), data)
    assert parts.ema is None and parts.eval_model is parts.model


def test_batchnorm_recalibration_films_are_a_seeded_sample_of_training_films(small_folder: Path, data: TrainingData) -> None:
    assert _parts(_config(small_folder), data).x_calibrate.shape == (0, SIZE, SIZE)  # bn_recalibrate 0: none
    a = _parts(_config(small_folder, "bn_recalibrate=40"), data).x_calibrate
    assert a.shape == (40, SIZE, SIZE) and a.dtype == torch.uint8
    rows = {bytes(x.numpy()) for x in data.x_train}
    assert {bytes(x.numpy()) for x in a} <= rows and len({bytes(x.numpy()) for x in a}) == 40  # distinct training films
    assert torch.equal(a, _parts(_config(small_folder, "bn_recalibrate=40"), data, seed=9).x_calibrate)
    assert not torch.equal(a, _parts(_config(small_folder, "bn_recalibrate=40", "seed=3"), data).x_calibrate)
    everything = _parts(_config(small_folder, "bn_recalibrate=5000"), data).x_calibrate
    assert len(everything) == data.n_train  # asking for more than there are gives all of them


def test_a_batch_larger_than_the_training_split_is_one_partial_batch(small_folder: Path, data: TrainingData) -> None:
    parts = _parts(_config(small_folder, "batch_size=128"), data)
    assert len(parts.batches) == 1 and not parts.batches.drop_last
    assert len(next(parts.batches.index_batches())) == data.n_train


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, imported by torch.compile
def test_compile_wraps_the_model_it_trains(small_folder: Path, data: TrainingData) -> None:
    parts = _parts(_config(small_folder, "compile=true"), data)
    assert parts.step_model is not parts.model and getattr(parts.step_model, "_orig_mod", None) is parts.model


def test_the_pathogen_task_gets_three_outputs_and_three_weights(small_folder: Path) -> None:
    config = _config(small_folder, "task=pathogen")
    data = _data(config)
    parts = _parts(config, data)
    assert parts.task is PATHOGEN
    assert parts.model.eval()(torch.rand(2, 1, SIZE, SIZE).contiguous(memory_format=torch.channels_last)).shape == (2, 3)
    assert torch.equal(parts.class_weights, class_weights(data.y_train.numpy(), 3, "class_weights"))
    assert set(data.y_train.tolist()) == {0, 1, 2}
