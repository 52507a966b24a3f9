from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.evaluation.evaluate import Abstention, Evaluation, FilmResult, evaluate
from pneumo.evaluation.report import write_report
from pneumo.inference.checks import warning_kind
from tests.conftest import SAMPLES, copy_class_folders


@pytest.fixture(scope="module")
def plots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plots")


@pytest.fixture(scope="module")
def report(trained_run: Path, kaggle_root: Path, plots: Path) -> Evaluation:
    return evaluate(kaggle_root, model=trained_run, split="test", n_boot=200, plots_dir=plots, progress=False)


def test_report_follows_the_published_interface(report: Evaluation) -> None:
    assert report.n == 50 and len(report.predictions) == 50 and all(isinstance(film, FilmResult) for film in report.predictions)
    assert {"path", "true_label", "predicted", "probability", "abstain", "warnings"} == set(report.to_dict()["predictions"][0])
    for film in report.predictions:  # the verdict at the threshold, or none where the model abstains
        assert film.predicted == (None if film.abstain else "PNEUMONIA" if film.probability >= report.threshold else "NORMAL")
    held = report.abstention
    assert held.n == sum(p.abstain for p in report.predictions) and sum(held.reasons.values()) == held.n
    assert held.judged is not None and held.judged["n"] == 50 - held.n


def test_metrics_agree_with_the_predictions(report: Evaluation) -> None:
    y = np.array([p.true_label == "PNEUMONIA" for p in report.predictions])
    prob = np.array([p.probability for p in report.predictions])
    pred = prob >= report.threshold
    assert report.accuracy == pytest.approx((pred == y).mean())
    assert report.recall == pytest.approx(pred[y].mean())
    assert report.specificity == pytest.approx((~pred[~y]).mean())
    assert report.at_half["accuracy"] == pytest.approx(((prob >= 0.5) == y).mean())
    assert y.sum() == 30


def test_intervals_bracket_the_estimates(report: Evaluation) -> None:
    for key in ("accuracy", "roc_auc", "recall"):
        lo, hi = report.ci95[key]
        assert lo <= getattr(report, key) <= hi
        # a perfect score (every resample perfect too) has a zero-width percentile interval; any other has width
        assert hi - lo > 0 or getattr(report, key) == 1.0


def test_pictures_and_json_are_written(report: Evaluation, plots: Path, tmp_path: Path) -> None:
    assert (plots / "roc.png").stat().st_size > 1000
    assert (plots / "confusion.png").stat().st_size > 1000
    assert (plots / "reliability.png").stat().st_size > 1000
    assert 0 <= report.ece <= 1 and sum(b["n"] for b in report.reliability) == report.n
    path = write_report(report.to_dict(), tmp_path / "r.json")
    assert json.loads(path.read_text())["n"] == 50


# the report's keys, in order, as `pneumo evaluate --json` has written them (with --shifts; a binary model)
REPORT_KEYS = [
    "n", "positives", "threshold", "accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "loss",
    "confusion_matrix", "ci95", "at_0.5", "ece", "reliability", "abstention", "shifted", "model", "data",
    "training_overlap", "warnings", "skipped", "predictions",
]  # fmt: skip


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Five films of each class, an adult film from another hospital and an adult colour photograph
    the bundled model abstains on, and a truncated film it cannot read."""
    root = copy_class_folders(tmp_path_factory.mktemp("mixed") / "set", {"NORMAL": 6, "PNEUMONIA": 5})
    shutil.copy(SAMPLES / "other" / "nih_00000001_000.png", root / "NORMAL")
    shutil.copy(SAMPLES / "other" / "adult_rgb_2373px.jpg", root / "PNEUMONIA")
    broken = sorted((root / "NORMAL").glob("*.jpeg"))[0]
    broken.write_bytes(broken.read_bytes()[:400])
    return root


def test_to_dict_is_the_json_the_command_writes(mixed_set: Path, tmp_path: Path) -> None:
    """Real films through the bundled model: the library's `to_dict()` and `pneumo evaluate --json` give one report."""
    from typer.testing import CliRunner

    from pneumo.cli import app

    report = evaluate(mixed_set, n_boot=20, shifts=True, progress=False)
    done = CliRunner().invoke(app, ["evaluate", str(mixed_set), "--json", str(tmp_path / "r.json"), "--bootstrap", "20", "--shifts"])
    assert done.exit_code == 0, done.output
    written = json.loads((tmp_path / "r.json").read_text())
    assert list(written) == REPORT_KEYS and list(written["abstention"]) == ["n", "share", "reasons", "judged"]
    assert written == json.loads(write_report(report.to_dict(), tmp_path / "library.json").read_text())  # NaN as null, as written
    assert written["skipped"] == [{"path": path, "error": why} for path, why in report.skipped] and len(report.skipped) == 1
    held = [film for film in written["predictions"] if film["abstain"]]
    assert len(held) == report.abstention.n == 2 and all(film["predicted"] is None and film["warnings"] for film in held)


def test_the_result_is_typed_and_its_abstentions_are_those_predict_makes(mixed_set: Path) -> None:
    from pneumo.inference.predict import predict

    report = evaluate(mixed_set, n_boot=0, progress=False)
    assert isinstance(report.abstention, Abstention) and report.shifted is None and "shifted" not in report.to_dict()
    assert report.n == 12 and report.skipped[0][0].endswith(".jpeg") and "truncated" in report.skipped[0][1]
    films = {Path(film.path).name: film for film in report.predictions}
    verdicts = {Path(p.path).name: p for p in predict(sorted(mixed_set.rglob("*.*")))}
    for name, film in films.items():  # one abstain rule: the same films held, for the same first warning, the same verdicts
        assert (film.abstain, film.predicted, film.warnings) == (verdicts[name].abstain, verdicts[name].label, verdicts[name].warnings)
    assert report.abstention.reasons == dict(Counter(warning_kind(f.warnings[0]) for f in report.predictions if f.abstain))
    assert films["nih_00000001_000.png"].true_label == "NORMAL" and films["nih_00000001_000.png"].predicted is None


def test_indexing_the_result_as_the_old_dict_still_works_and_warns(report: Evaluation) -> None:
    """Code written when evaluate returned a dict reads the same values for one more release, told what to write instead."""
    with pytest.warns(DeprecationWarning, match=r"report\['accuracy'\] is deprecated .* use report\.accuracy"):
        assert report["accuracy"] == report.accuracy
    with pytest.warns(DeprecationWarning, match=r"use report\.at_half"):
        assert report["at_0.5"] == report.at_half
    with pytest.warns(DeprecationWarning, match=r"use report\.to_dict\(\)\['nothing'\]"), pytest.raises(KeyError):
        report["nothing"]
    with pytest.warns(DeprecationWarning):
        assert report["predictions"][0]["true_label"] == report.predictions[0].true_label
    with pytest.raises(TypeError, match="not iterable"):  # not a mapping: no silent `in` through __getitem__
        "accuracy" in report


def test_a_root_with_several_splits_needs_one_named(trained_run: Path, kaggle_root: Path) -> None:
    with pytest.raises(PneumoError, match="choose one with --split"):
        evaluate(kaggle_root, model=trained_run, progress=False)


def test_unreadable_images_are_skipped_and_reported(trained_run: Path, small_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "set"
    shutil.copytree(small_folder, data)
    broken = sorted((data / "NORMAL").glob("*.jpeg"))[0]
    broken.write_bytes(broken.read_bytes()[:400])
    rep = evaluate(data, model=trained_run, n_boot=50, progress=False)
    assert rep.n == 119 and [path for path, _ in rep.skipped] == [str(broken)]
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
