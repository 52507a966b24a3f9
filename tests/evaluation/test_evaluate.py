from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.evaluation.evaluate import evaluate
from pneumo.evaluation.report import write_report


@pytest.fixture(scope="module")
def report(trained_run: Path, kaggle_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    plots = tmp_path_factory.mktemp("plots")
    rep = evaluate(kaggle_root, model=trained_run, split="test", n_boot=200, plots_dir=plots, progress=False)
    rep["_plots"] = plots
    return rep


def test_report_follows_the_published_interface(report: dict) -> None:
    for key in ("n", "threshold", "accuracy", "precision", "recall", "specificity", "f1", "roc_auc"):
        assert key in report
    assert report["n"] == 50 and len(report["predictions"]) == 50
    assert {"path", "true_label", "predicted", "probability", "abstain", "warnings"} == set(report["predictions"][0])
    for film in report["predictions"]:  # the verdict at the threshold, or none where the model abstains
        assert film["predicted"] == (None if film["abstain"] else "PNEUMONIA" if film["probability"] >= report["threshold"] else "NORMAL")
    held = report["abstention"]
    assert held["n"] == sum(p["abstain"] for p in report["predictions"]) and sum(held["reasons"].values()) == held["n"]
    assert held["judged"]["n"] == 50 - held["n"]


def test_metrics_agree_with_the_predictions(report: dict) -> None:
    y = np.array([p["true_label"] == "PNEUMONIA" for p in report["predictions"]])
    prob = np.array([p["probability"] for p in report["predictions"]])
    pred = prob >= report["threshold"]
    assert report["accuracy"] == pytest.approx((pred == y).mean())
    assert report["recall"] == pytest.approx(pred[y].mean())
    assert report["specificity"] == pytest.approx((~pred[~y]).mean())
    assert report["at_0.5"]["accuracy"] == pytest.approx(((prob >= 0.5) == y).mean())
    assert y.sum() == 30


def test_intervals_bracket_the_estimates(report: dict) -> None:
    for key in ("accuracy", "roc_auc", "recall"):
        lo, hi = report["ci95"][key]
        assert lo <= report[key] <= hi
        # a perfect score (every resample perfect too) has a zero-width percentile interval; any other has width
        assert hi - lo > 0 or report[key] == 1.0


def test_pictures_and_json_are_written(report: dict, tmp_path: Path) -> None:
    assert (report["_plots"] / "roc.png").stat().st_size > 1000
    assert (report["_plots"] / "confusion.png").stat().st_size > 1000
    assert (report["_plots"] / "reliability.png").stat().st_size > 1000
    assert 0 <= report["ece"] <= 1 and sum(b["n"] for b in report["reliability"]) == report["n"]
    clean = {k: v for k, v in report.items() if k != "_plots"}
    path = write_report(clean, tmp_path / "r.json")
    assert json.loads(path.read_text())["n"] == 50


def test_a_root_with_several_splits_needs_one_named(trained_run: Path, kaggle_root: Path) -> None:
    with pytest.raises(PneumoError, match="choose one with --split"):
        evaluate(kaggle_root, model=trained_run, progress=False)


def test_unreadable_images_are_skipped_and_reported(trained_run: Path, small_folder: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "set"
    shutil.copytree(small_folder, data)
    broken = sorted((data / "NORMAL").glob("*.jpeg"))[0]
    broken.write_bytes(broken.read_bytes()[:400])
    rep = evaluate(data, model=trained_run, n_boot=50, progress=False)
    assert rep["n"] == 119 and [s["path"] for s in rep["skipped"]] == [str(broken)]
    with pytest.raises(PneumoError, match="1 of 120 images cannot be read"):
        evaluate(data, model=trained_run, n_boot=50, progress=False, strict=True)


def test_a_non_finite_probability_stops_the_evaluation_naming_the_film(small_folder: Path) -> None:
    """NaN >= threshold is False: counted, it would read NORMAL and move every metric. It is an error naming the film."""
    from pneumo.inference.base import Model
    from pneumo.models.meta import CheckpointMeta

    class Broken(Model):
        meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=32, mean=0.0, std=1.0, threshold=0.5)

        def class_probabilities(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
            p = np.full(len(images), 0.3)
            p[5] = np.nan
            return np.c_[1 - p, p]

    with pytest.raises(PneumoError, match=r"non-finite probability for .*NORMAL.*\.jpeg \(\[nan, nan\]\)"):
        evaluate(small_folder, model=Broken(), n_boot=10, progress=False)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        ({"data": None}, "data must be a dataset folder (NORMAL/ and PNEUMONIA/, or train/ val/ test/ holding them) or a CSV manifest"),
        ({"data": b"test"}, "got b'test' (bytes)"),
        ({"model": 123}, "model must be a run or checkpoint folder"),
        ({"n_boot": -1}, "n_boot must be a whole number from 0 to 1000000; got -1 (int)"),
        ({"n_boot": True}, "got True (bool)"),
        ({"seed": -1}, "seed must be a whole number of at least 0; got -1 (int)"),
        ({"split": 0}, "split must be a str"),
        ({"shifts": "yes"}, "shifts must be True or False; got 'yes' (str)"),
        ({"plots_dir": 3}, "plots_dir must be a folder for the plots"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_a_wrong_argument_is_refused_before_the_model_loads(wrong: dict, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pneumo.evaluation import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    arguments = {"data": "test", **wrong}
    with pytest.raises(PneumoError) as err:
        evaluate(arguments.pop("data"), progress=False, **arguments)
    assert message in str(err.value)
