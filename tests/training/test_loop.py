from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np
import pytest
import torch
import yaml

from pneumo.config import Config, load_config
from pneumo.errors import PneumoError
from pneumo.inference.torch_backend import load_checkpoint
from pneumo.training.loop import train
from pneumo.training.optim import class_weights, lr_factor


def _quiet(**kwargs: object) -> dict:
    return {"progress": False, "n_boot": 50, **kwargs}


def test_run_folder_holds_everything_about_the_run(trained_run: Path, kaggle_root: Path) -> None:
    names = {p.name for p in trained_run.iterdir()}
    assert {
        "config.yaml",
        "split.csv",
        "history.csv",
        "history.png",
        "roc.png",
        "confusion.png",
        "val_report.json",
        "model",
        "checkpoints",
    } <= names
    assert {p.name for p in (trained_run / "checkpoints").iterdir()} == {"best", "last"}
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["model"] == "resnet18" and config["image_size"] == 64 and config["epochs"] == 3

    with (trained_run / "split.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 200  # every training image of the archive, none of its test split
    train_patients = {r["patient_id"] for r in rows if r["split"] == "train"}
    val_patients = {r["patient_id"] for r in rows if r["split"] == "val"}
    assert val_patients and not train_patients & val_patients

    with (trained_run / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]
    for column in (
        "train_loss",
        "train_accuracy",
        "train_precision",
        "train_recall",
        "train_roc_auc",
        "val_loss",
        "val_accuracy",
        "val_precision",
        "val_recall",
        "val_roc_auc",
    ):
        assert column in history[0]


def test_the_run_model_carries_its_threshold_and_provenance(trained_run: Path) -> None:
    model = load_checkpoint(trained_run)
    meta = model.meta
    assert meta.architecture == "resnet18" and meta.task == "binary" and meta.image_size == 64
    assert 0.0 <= meta.threshold <= 1.0 and meta.threshold_method == "youden"
    assert meta.config["epochs"] == 3 and len(meta.data_fingerprint) == 32
    assert set(meta.val_metrics) >= {"accuracy", "recall", "specificity", "roc_auc"}
    best_epoch = yaml.safe_load((trained_run / "checkpoints" / "best" / "meta.json").read_text())["epoch"]
    assert meta.epoch == best_epoch


def test_a_tiny_real_run_learns_something(trained_run: Path) -> None:
    import json

    report = json.loads((trained_run / "val_report.json").read_text())
    # 160 training images, 3 epochs at 64 px: far from good, but clearly better than chance
    assert report["roc_auc"] > 0.7
    assert report["ci95"]["roc_auc"][0] <= report["roc_auc"] <= report["ci95"]["roc_auc"][1]
    assert report["leak"]["patients_in_both"] == 0


@pytest.mark.slow
def test_same_seed_same_run_on_cpu(small_folder: Path, tmp_path: Path) -> None:
    cfg = load_config("seed", [f"data={small_folder}", "image_size=64", "epochs=2", "batch_size=16"])
    a = train(cfg, out=tmp_path / "a", **_quiet())
    b = train(cfg, out=tmp_path / "b", **_quiet())
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert (tmp_path / "a" / "model" / "weights.safetensors").read_bytes() == (
        tmp_path / "b" / "model" / "weights.safetensors"
    ).read_bytes()


def test_seed_recipe_judges_the_last_epoch_at_half(small_folder: Path, tmp_path: Path) -> None:
    cfg = load_config("seed", [f"data={small_folder}", "image_size=64", "epochs=2", "batch_size=16"])
    result = train(cfg, out=tmp_path / "run", **_quiet())
    meta = load_checkpoint(tmp_path / "run").meta
    assert meta.epoch == 2 and meta.threshold == 0.5
    # image-level split as in the notebook: the leak report is computed
    assert "patients_in_both" in result.report["leak"]
    # the report reuses the last epoch's validation pass: it is what the saved model gives on those films
    from pneumo.evaluation.evaluate import evaluate

    again = evaluate(tmp_path / "run" / "split.csv", model=tmp_path / "run", split="val", n_boot=50)
    assert again.roc_auc == pytest.approx(result.report["roc_auc"], abs=1e-9) == pytest.approx(result.history[-1]["val_roc_auc"], abs=1e-9)
    assert again.confusion_matrix == result.report["confusion_matrix"]


def test_a_run_fits_its_temperature_and_every_prediction_uses_it(small_folder: Path, tmp_path: Path) -> None:
    import dataclasses

    from pneumo.data.preprocess import load_image
    from pneumo.evaluation.calibration import apply_temperature

    cfg = load_config("cpu", [f"data={small_folder}", "image_size=64", "epochs=2", "batch_size=16", "calibration=shift"])
    result = train(cfg, out=tmp_path / "run", **_quiet())
    calibration = result.report["calibration"]
    model = load_checkpoint(tmp_path / "run")
    assert model.meta.temperature == calibration["temperature"] != 1.0 and calibration["method"] == "shift"
    assert {"ece_before", "ece_after", "ece_shifted_before", "ece_shifted_after"} <= set(calibration)
    assert 0 <= result.report["ece"] <= 1 and len(result.report["reliability"]) == 10
    assert 0 <= result.report["cam_frame_share"] <= 1
    assert (tmp_path / "run" / "reliability.png").stat().st_size > 1000
    images = np.stack([load_image(f, 64) for f in sorted((small_folder / "NORMAL").glob("*.jpeg"))[:4]])
    raw = dataclasses.replace(model, meta=model.meta.replace(temperature=1.0)).class_probabilities(images)
    np.testing.assert_allclose(model.class_probabilities(images), apply_temperature(raw, model.meta.temperature), atol=1e-5)


def test_a_run_gives_back_the_global_random_state_and_cudnn_settings(small_folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(1234)
    before, benchmark = torch.get_rng_state(), torch.backends.cudnn.benchmark
    train(
        load_config("seed", [f"data={small_folder}", "image_size=32", "epochs=1", "batch_size=16", "limit=60"]),
        out=tmp_path / "run",
        **_quiet(),
    )
    assert torch.equal(torch.get_rng_state(), before) and torch.backends.cudnn.benchmark == benchmark
    with pytest.raises(PneumoError):  # and on the way out of a failed run
        train(load_config("seed", [f"data={tmp_path / 'missing'}"]), out=tmp_path / "failed", **_quiet())
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow
def test_pathogen_task_trains_a_three_class_model(kaggle_root: Path, tmp_path: Path) -> None:
    cfg = load_config("cpu", [f"data={kaggle_root}", "task=pathogen", "image_size=64", "epochs=1", "batch_size=16"])
    result = train(cfg, out=tmp_path / "run", **_quiet())
    model = load_checkpoint(tmp_path / "run")
    assert model.meta.classes == ["normal", "bacteria", "virus"] and model.meta.num_outputs == 3
    assert set(result.report["pathogen"]["per_class"]) == {"normal", "bacteria", "virus"}
    probs = model.class_probabilities(np.zeros((2, 64, 64), dtype=np.uint8))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_a_run_folder_is_never_overwritten_silently(small_folder: Path, tmp_path: Path) -> None:
    cfg = load_config("seed", [f"data={small_folder}", "image_size=64", "epochs=1", "limit=40"])
    train(cfg, out=tmp_path / "run", **_quiet())
    with pytest.raises(PneumoError, match="already exists"):
        train(cfg, out=tmp_path / "run", **_quiet())
    train(cfg, out=tmp_path / "run", **_quiet(overwrite=True))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(PneumoError, match="refusing to overwrite"):
        train(cfg, out=tmp_path / "mine", **_quiet(overwrite=True))
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_a_run_logs_through_logging_and_prints_nothing(
    small_folder: Path, tmp_path: Path, pneumo_log: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    """Every line of a run, the input check's included, is a `pneumo.training` record: a notebook chooses where they go."""
    cfg = load_config("seed", [f"data={small_folder}", "image_size=64", "epochs=1", "limit=40"])
    train(cfg, out=tmp_path / "run", **_quiet())
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert {r.name for r in pneumo_log.records} <= {
        "pneumo.training.loop",
        "pneumo.training.parts",
        "pneumo.training.data",
        "pneumo.training.report",
    }
    assert any(m.startswith("epoch   1/1") for m in pneumo_log.messages) and any(m.startswith("input check:") for m in pneumo_log.messages)


def test_the_deprecated_log_function_still_gets_every_line(
    small_folder: Path, tmp_path: Path, pneumo_log: pytest.LogCaptureFixture
) -> None:
    """`train(log=...)` works for one more release, with a DeprecationWarning; the lines go to it alone, as before."""
    cfg = load_config("seed", [f"data={small_folder}", "image_size=64", "epochs=1", "limit=40"])
    lines: list[str] = []
    with pytest.warns(DeprecationWarning, match=r"train\(log=\.\.\.\) is deprecated.*logging\.basicConfig"):
        train(cfg, out=tmp_path / "run", log=lines.append, **_quiet())
    assert any(m.startswith("epoch   1/1") for m in lines) and any(m.startswith("input check:") for m in lines)
    assert pneumo_log.messages == []  # not also through logging
    assert logging.getLogger("pneumo").handlers == [] and logging.getLogger("pneumo").propagate  # as it was


def test_a_diverging_run_stops_with_a_message(small_folder: Path, tmp_path: Path) -> None:
    cfg = load_config("seed", [f"data={small_folder}", "image_size=64", "epochs=1", "lr=1e30", "limit=64"])
    with pytest.raises(PneumoError, match=r"loss became (nan|inf) at epoch 1, step \d+; try a lower lr"):
        train(cfg, out=tmp_path / "run", **_quiet())


def test_bf16_autocast_only_where_the_hardware_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pneumo.training import optim

    assert optim.bf16_autocast_helps(torch.device("cuda"))
    for flags, native in (
        ("fpu avx2 avx512f avx512_bf16", True),
        ("fpu avx2 amx_tile amx_bf16", True),
        ("fpu avx2 avx512f", False),
        (None, False),
    ):
        monkeypatch.setattr(optim, "_cpu_flags", lambda flags=flags: None if flags is None else set(flags.split()))
        assert optim.bf16_autocast_helps(torch.device("cpu")) is native, flags


def test_class_weights_are_the_notebooks() -> None:
    targets = np.array([0] * 25 + [1] * 75)
    assert class_weights(targets, 2, "class_weights").tolist() == pytest.approx([100 / (2 * 25), 100 / (2 * 75)])
    assert class_weights(targets, 2, "none").tolist() == [1.0, 1.0]


def test_schedule_warms_up_then_decays_to_zero() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, "cosine") < 0.01
    assert lr_factor(50, 100, 0, "constant") == 1.0


@pytest.mark.slow
def test_ema_weights_are_what_the_run_keeps(small_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    base = [f"data={small_folder}", "image_size=64", "epochs=2", "batch_size=16", "select=last"]
    plain = train(load_config("seed", base), out=tmp_path / "plain", **_quiet())
    averaged = train(load_config("seed", [*base, "ema=0.9"]), out=tmp_path / "ema", **_quiet())
    # same seed, same raw trajectory: the training loss is identical, the kept weights are not
    assert [r["train_loss"] for r in plain.history] == [r["train_loss"] for r in averaged.history]
    a = load_file(str(tmp_path / "plain" / "model" / "weights.safetensors"))
    b = load_file(str(tmp_path / "ema" / "model" / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert load_checkpoint(tmp_path / "ema").meta.config["ema"] == 0.9
    with pytest.raises(PneumoError, match="'ema' must be in"):
        load_config("seed", ["ema=1.5"])


def test_shift_threshold_and_the_shifted_validation_report(small_folder: Path, tmp_path: Path) -> None:
    cfg = load_config("cpu", [f"data={small_folder}", "image_size=64", "epochs=2", "batch_size=16", "threshold=shift"])
    result = train(cfg, out=tmp_path / "run", **_quiet())
    meta = load_checkpoint(tmp_path / "run").meta
    assert meta.threshold_method == "shift" and 0.01 <= meta.threshold <= 0.99
    shifted = result.report["shifted"]
    assert "none" in shifted and "blur (sigma 1% of side)" in shifted
    assert shifted["none"]["recall"] == pytest.approx(result.report["recall"])


def test_ema_warms_up_then_follows_its_decay() -> None:
    from pneumo.training.optim import ema_update

    update = ema_update(0.99)
    avg, new = [torch.zeros(3), torch.zeros(2)], [torch.ones(3), torch.ones(2)]
    update(avg, new, torch.tensor(1))  # decay (1+1)/(10+1): mostly the new weights
    assert all(torch.allclose(a, torch.full_like(a, 1 - 2 / 11)) for a in avg)
    avg = [torch.zeros(3)]
    update(avg, [torch.ones(3)], torch.tensor(10_000))  # capped at 0.99
    assert torch.allclose(avg[0], torch.full((3,), 0.01))
    counters = [torch.tensor(3)]
    update(counters, [torch.tensor(7)], torch.tensor(5))  # integer buffers follow the model
    assert counters[0].item() == 7


def test_batchnorm_recalibration_measures_exact_statistics_with_dropout_off() -> None:
    from pneumo.training.batchnorm import recalibrate_batchnorm

    net = torch.nn.Sequential(torch.nn.Dropout(0.9), torch.nn.BatchNorm2d(1, momentum=0.01))
    images = torch.stack([torch.full((8, 8), v, dtype=torch.uint8) for v in (0, 51, 102, 153, 204, 255)])
    net.train()
    recalibrate_batchnorm(net, images, mean=0.0, std=1.0, batch_size=3)
    halves = (images.float() / 255).split(3)
    bn = net[1]
    # the average of the two batches' statistics; dropout would have zeroed 90% of the pixels
    assert bn.running_mean.item() == pytest.approx(sum(h.mean().item() for h in halves) / 2, abs=1e-6)
    assert bn.running_var.item() == pytest.approx(sum(h.var().item() for h in halves) / 2, rel=1e-3)
    assert bn.momentum == 0.01 and net.training  # left as it was found


def _stop_mid_epoch_2(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at the second batch after epoch 1's state was saved: a stop in the middle of epoch 2."""
    import pneumo.training.loop

    real, batches_after = pneumo.training.loop.augment_batch, []

    def augment_then_stop(*args: object, **kwargs: object) -> torch.Tensor:
        if (run / "checkpoints" / "last" / "state.json").exists():
            batches_after.append(1)
            if len(batches_after) == 2:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pneumo.training.loop, "augment_batch", augment_then_stop)


def _same_tensors(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["cpu", "seed"])  # cpu: EMA, BatchNorm recalibration, augmentation, dropout
def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_run(
    recipe: str, small_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pneumo.training.state import saved_epoch

    cfg = load_config(recipe, [f"data={small_folder}", "image_size=64", "epochs=3", "batch_size=16", "limit=64"])
    whole = train(cfg, out=tmp_path / "whole", **_quiet())

    stopped = tmp_path / "stopped"
    _stop_mid_epoch_2(stopped, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=stopped, **_quiet())
    monkeypatch.undo()
    assert saved_epoch(stopped / "checkpoints" / "last") == 1 and not (stopped / "model").exists()
    resumed = train(None, out=stopped, **_quiet(resume=True))

    for folder in ("model", "checkpoints/last", "checkpoints/best"):
        assert _same_tensors(tmp_path / "whole" / folder / "weights.safetensors", stopped / folder / "weights.safetensors"), folder
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert _untimed(resumed.history) == _untimed(whole.history)
    with (stopped / "history.csv").open() as fh, (tmp_path / "whole" / "history.csv").open() as gh:
        assert _untimed(csv.DictReader(fh)) == _untimed(csv.DictReader(gh))
    assert resumed.config == cfg
    for key in ("epoch", "threshold", "roc_auc", "accuracy", "ci95", "shifted"):
        assert json.dumps(resumed.report[key]) == json.dumps(whole.report[key]), key
    assert {p.name for p in stopped.iterdir()} == {p.name for p in (tmp_path / "whole").iterdir()}


def _untimed(history: Iterable[dict]) -> str:
    """History rows without the wall-clock column, as JSON (where NaN equals NaN)."""
    return json.dumps([{k: v for k, v in row.items() if k != "seconds"} for row in history])


@pytest.mark.slow
def test_resume_continues_only_what_it_can(small_folder: Path, tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    from safetensors.torch import load_file

    cfg = load_config("seed", [f"data={small_folder}", "image_size=64", "epochs=1", "limit=40"])
    run = tmp_path / "run"
    train(cfg, out=run, **_quiet())
    with pytest.raises(PneumoError, match=f"run {run} already finished all 1 epochs"):
        train(None, out=run, **_quiet(resume=True))
    with pytest.raises(PneumoError, match=r"differs from the one run .* started with in epochs \(run: 1, given: 2\)"):
        train(load_config("seed", [f"data={small_folder}", "image_size=64", "epochs=2", "limit=40"]), out=run, **_quiet(resume=True))
    with pytest.raises(PneumoError, match="ask for one of them"):
        train(cfg, out=run, **_quiet(resume=True, overwrite=True))
    with pytest.raises(PneumoError, match="not a pneumo run folder"):
        train(None, out=tmp_path / "nowhere", **_quiet(resume=True))
    with pytest.raises(PneumoError, match="a new run needs a config"):
        train(None, out=tmp_path / "new", **_quiet())

    # stopped after the last epoch's state, before the model and report: resuming only finishes them
    kept = load_file(str(run / "model" / "weights.safetensors"))
    shutil.rmtree(run / "model")
    (run / "val_report.json").unlink()
    result = train(cfg, out=run, **_quiet(resume=True))
    assert result.report["epoch"] == 1 and len(result.history) == 1
    assert all(torch.equal(kept[k], v) for k, v in load_file(str(run / "model" / "weights.safetensors")).items())

    (run / "val_report.json").unlink()
    (run / "checkpoints" / "last" / "state.json").unlink()
    meta_path = run / "checkpoints" / "last" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "epoch": 3}))  # a later epoch without its state: a run from before resume existed
    with pytest.raises(PneumoError, match="holds no training state"):
        train(None, out=run, **_quiet(resume=True))
    meta_path.write_text(json.dumps(meta))  # stopped inside epoch 1, before its state was committed: nothing to lose
    restarted = train(None, out=run, progress=False, resume=True)
    assert (
        any("from the start" in line for line in pneumo_log.messages) and len(restarted.history) == 1 and (run / "val_report.json").exists()
    )


def test_an_unreadable_training_image_is_skipped_unless_strict(
    small_folder: Path, tmp_path: Path, pneumo_log: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_folder, data)
    broken = sorted((data / "PNEUMONIA").glob("*.jpeg"))[5]
    broken.write_bytes(broken.read_bytes()[:500])
    base = [f"data={data}", "image_size=64", "epochs=1"]
    train(load_config("seed", base), out=tmp_path / "run", **_quiet())
    assert any("skipped 1 unreadable images" in line and broken.name in line for line in pneumo_log.messages)
    used = [row["path"] for row in csv.DictReader((tmp_path / "run" / "split.csv").open())]
    assert len(used) == 119 and str(broken) not in used
    with pytest.raises(PneumoError, match=broken.name):
        train(load_config("seed", [*base, "strict=true"]), out=tmp_path / "strict", **_quiet())


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (lambda: {"epochs": 1}, "config must be a Config: load_config"),
        (lambda: "seed", "got 'seed' (str)"),
        (lambda: Config(epochs=0), "config key 'epochs' must be"),  # built by hand: checked as a file is
        (lambda: Config(batch_size=-1), "config key 'batch_size' must be"),
        (lambda: None, "a new run needs a config"),
    ],
    ids=["dict", "name", "epochs=0", "batch_size=-1", "None"],
)
def test_a_config_that_is_not_one_is_refused_before_the_run_folder(config: object, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match=re.escape(fragment)):
        train(config(), out=tmp_path / "run", progress=False)  # type: ignore[operator]
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_that_is_not_there_is_refused_before_the_run_folder(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="no CUDA GPU is available"):
        train(load_config("seed", ["device=cuda"]), out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
