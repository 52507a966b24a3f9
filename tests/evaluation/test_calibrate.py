"""`pneumo calibrate`: a model moved to a site's films, written as a model folder.

The site's films are real training films under a simulated acquisition shift, saved as new files:
their content is the model's own no longer (as a new site's would not be), and the shift is one
the model's input check and operating point were not chosen on unshifted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.evaluation.calibrate import MIN_UNLABELED, calibrate
from pneumo.evaluation.evaluate import evaluate
from pneumo.evaluation.robustness import apply_shift
from pneumo.inference.predict import load_model, predict
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CheckpointMeta
from pneumo.models.registry import create_model
from pneumo.utils.walk import image_files
from tests.conftest import SHARED, copy_class_folders, pick

SHIFT = "darker (gamma 1.5)"


def _shifted_copies(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = apply_shift(np.stack([load_image(f, 224) for f in files]), SHIFT)
    for f, image in zip(files, images):
        Image.fromarray(image).save(folder / f"{f.stem}.png")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site: 20 + 20 labelled films, and 70 unlabelled ones (other films, both classes) in one folder."""
    root = tmp_path_factory.mktemp("site")
    for label in ("NORMAL", "PNEUMONIA"):
        _shifted_copies(pick(label, 20, offset=5), root / "labelled" / label)
        _shifted_copies(pick(label, 35, offset=11), root / "unlabeled")
    return root


def test_labelled_films_move_the_operating_point_and_the_folder_works_everywhere(site: Path, tmp_path: Path) -> None:
    result = calibrate(site / "labelled", out=tmp_path / "m", n_boot=200, progress=False)
    meta = load_model(tmp_path / "m").meta
    bundled = load_model(None).meta
    assert (meta.threshold, meta.temperature, meta.logit_offset) == pytest.approx(
        (result.threshold, result.temperature, result.logit_offset)
    )
    assert meta.threshold_method == "site" and meta.weights_sha256 == bundled.weights_sha256  # the weights are the bundled ones
    record = meta.site_calibration
    assert record["labelled"]["n_normal"] == 20 and record["labelled"]["n_pneumonia"] == 20 and len(record["labelled"]["fingerprint"]) == 32
    assert record["prevalence"]["source"] == "unknown" and "balanced" in record["decision"] and record["unlabeled"] is None
    assert record["previous"]["threshold"] == bundled.threshold and meta.calibration_prior == bundled.calibration_prior
    assert (tmp_path / "m" / "reliability.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "m" / "site_calibration.json").read_text())
    assert saved["site"]["labelled"]["n"] == 40 and saved["before"]["threshold"] == bundled.threshold
    # the folder answers at its new operating point, with both backends' inputs
    report = evaluate(site / "labelled", model=tmp_path / "m", n_boot=50, progress=False)
    assert report.threshold == result.threshold and report.accuracy >= 0.85
    assert {p.threshold for p in predict([site / "labelled" / "NORMAL"], model=tmp_path / "m")} == {result.threshold}


def test_unlabelled_films_estimate_the_prevalence_and_widen_the_check_only_to_the_site(
    site: Path, tmp_path: Path, shared_data: Path
) -> None:
    result = calibrate(site / "labelled", out=tmp_path / "m", unlabeled=site / "unlabeled", n_boot=100, progress=False)
    assert result.prevalence_source == "estimated" and 0.3 < result.prevalence < 0.7  # half of the 70 films are pneumonia
    assert result.threshold == 0.5  # at a known prevalence, P >= 1/2 is the best accuracy
    record = load_model(tmp_path / "m").meta.site_calibration
    assert record["unlabeled"]["n"] == 70 and record["prevalence"]["ci95"][0] < result.prevalence < record["prevalence"]["ci95"][1]
    assert result.refused_after <= 0.01 and result.refused_after <= result.refused_before
    widened = load_model(tmp_path / "m").with_feature_check()
    assert widened.feature_check.site is not None
    # adult films from other hospitals are still refused, and so are non-chest images
    adults = predict(image_files(shared_data / "ood" / "adult_other_hospitals"), model=widened)
    assert np.mean([p.abstain for p in adults]) >= 0.9
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224), dtype=np.uint8)).save(noise)
    assert predict([noise], model=widened)[0].abstain


def test_a_given_prevalence_wins_and_calibrates_the_probabilities(site: Path, tmp_path: Path) -> None:
    low = calibrate(site / "labelled", out=tmp_path / "low", prevalence=0.1, n_boot=50, progress=False)
    high = calibrate(site / "labelled", out=tmp_path / "high", prevalence=0.9, n_boot=50, progress=False)
    assert low.prevalence_source == "given" and low.threshold == high.threshold == 0.5
    films = image_files(site / "labelled")
    p_low = [p.probability for p in predict(films, model=tmp_path / "low")]
    p_high = [p.probability for p in predict(films, model=tmp_path / "high")]
    assert all(a < b for a, b in zip(p_low, p_high))  # the same film is likelier pneumonia where pneumonia is common
    only = calibrate(None, out=tmp_path / "only", prevalence=0.3, n_boot=0, progress=False)  # no films at all: the prevalence alone
    assert only.report["site"]["labelled"] is None and only.prevalence == 0.3


def _expect_refusal(match: str, out: Path, **kwargs: object) -> None:
    with pytest.raises(PneumoError, match=match):
        calibrate(out=out, progress=False, **kwargs)
    assert not out.exists()  # nothing written


def test_bad_inputs_are_refused_before_anything_is_written(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _expect_refusal("nothing was given", out)
    for bad in (0, 1, 1.5, -0.2, float("nan"), True):
        _expect_refusal("prevalence must be a number between 0 and 1", out, labelled=site / "labelled", prevalence=bad)
    _expect_refusal("min_per_class must be a whole number of at least 1", out, labelled=site / "labelled", min_per_class=-5)
    _expect_refusal("n_boot must be a whole number from 0 to 1000000", out, labelled=site / "labelled", n_boot=-1)
    one_class = tmp_path / "one-class"
    shutil.copytree(site / "labelled" / "NORMAL", one_class / "NORMAL")
    _expect_refusal("no PNEUMONIA/ folder", out, labelled=one_class)
    manifest = tmp_path / "one-class.csv"
    manifest.write_text("path,label\n" + "".join(f"{f},NORMAL\n" for f in sorted((site / "labelled" / "NORMAL").iterdir())))
    _expect_refusal("NORMAL films only.*both classes", out, labelled=manifest)
    few = tmp_path / "few"
    shutil.copytree(site / "unlabeled", few)
    for extra in sorted(few.iterdir())[MIN_UNLABELED - 10 :]:
        extra.unlink()
    _expect_refusal(f"has {MIN_UNLABELED - 10} image files.*at least {MIN_UNLABELED}", out, unlabeled=few)
    _expect_refusal(r"holds labelled class folders \(NORMAL, PNEUMONIA\)", out, unlabeled=site / "labelled")
    own = copy_class_folders(tmp_path / "own", {"NORMAL": 30, "PNEUMONIA": 30})
    flat = tmp_path / "own-flat"
    flat.mkdir()
    for f in image_files(own):
        shutil.copy(f, flat / f.name)
    _expect_refusal("60 of its 60 films are films this model was trained or validated on.*teach nothing", out, unlabeled=flat)


def test_copies_and_unreadable_films_do_not_count_as_films(site: Path, tmp_path: Path) -> None:
    copies = tmp_path / "copies"
    for label in ("NORMAL", "PNEUMONIA"):
        (copies / label).mkdir(parents=True)
        first = sorted((site / "labelled" / label).iterdir())[0]
        for i in range(20):
            shutil.copy(first, copies / label / f"{i}.png")
    with pytest.raises(PneumoError, match=r"1 NORMAL and 1 PNEUMONIA distinct readable \(38 copies of other films left out\)"):
        calibrate(copies, out=tmp_path / "out", progress=False)
    broken = tmp_path / "broken"
    shutil.copytree(site / "labelled", broken)
    for f in sorted((broken / "NORMAL").iterdir())[:5]:
        f.write_bytes(b"not an image")
    with pytest.raises(PneumoError, match=r"15 NORMAL and 20 PNEUMONIA distinct readable \(5 unreadable left out\)"):
        calibrate(broken, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_an_uncertain_operating_point_is_warned_about(site: Path, tmp_path: Path) -> None:
    untrained = CheckpointMeta(
        "seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=64, mean=0.0, std=1.0, threshold=0.5
    )
    ckpt = save_checkpoint(tmp_path / "untrained", create_model("seed_cnn", image_size=64), untrained)
    result = calibrate(site / "labelled", out=tmp_path / "out", model=ckpt, n_boot=200, progress=False)
    assert result.warnings and any("does not separate" in w or "label more films" in w for w in result.warnings)
    with pytest.raises(PneumoError, match="already exists"):
        calibrate(site / "labelled", out=tmp_path / "out", model=ckpt, progress=False)
    with pytest.raises(PneumoError, match="keeps no outlier films"):  # no input check to widen
        calibrate(site / "labelled", out=tmp_path / "out2", model=ckpt, unlabeled=site / "unlabeled", progress=False)


def test_calibrating_on_the_models_own_training_films_is_warned_about(tmp_path: Path) -> None:
    own = copy_class_folders(tmp_path / "own", {"NORMAL": 20, "PNEUMONIA": 20})  # films of the training split, as they are
    result = calibrate(own, out=tmp_path / "m", n_boot=50, progress=False)
    said = [w for w in result.warnings if "films this model was trained on" in w]
    assert len(said) == 1 and "this calibration fits the model's own films, not the site's" in said[0]


def test_overwrite_replaces_only_a_pneumo_model_folder_and_never_the_source(site: Path, tmp_path: Path) -> None:
    first = calibrate(site / "labelled", out=tmp_path / "m", n_boot=20, progress=False)
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(PneumoError, match="notes.txt.*refusing"):
        calibrate(site / "labelled", out=tmp_path / "m", n_boot=20, overwrite=True, progress=False)
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine" and (tmp_path / "m" / "meta.json").is_file()
    (tmp_path / "m" / "notes.txt").unlink()
    again = calibrate(site / "labelled", out=tmp_path / "m", n_boot=20, overwrite=True, progress=False)
    assert again.threshold == first.threshold
    with pytest.raises(PneumoError, match="is the model being calibrated"):
        calibrate(site / "labelled", out=tmp_path / "m", model=tmp_path / "m", n_boot=20, overwrite=True, progress=False)
    # calibrating a calibrated model starts again from the model's own operating point, not from the site's
    twice = calibrate(site / "labelled", out=tmp_path / "m2", model=tmp_path / "m", n_boot=20, progress=False)
    assert twice.threshold == pytest.approx(first.threshold) and twice.temperature == pytest.approx(first.temperature)


@pytest.mark.slow  # a new process loading torch
def test_the_command_prints_before_and_after_and_refuses_in_one_line(site: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo",
            "calibrate",
            str(site / "labelled"),
            "--unlabeled",
            str(site / "unlabeled"),
            "--out",
            str(tmp_path / "m"),
            "--bootstrap",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "before" in done.stdout and "after" in done.stdout and "--model" in done.stdout
    assert "estimated from the unlabelled films" in done.stdout and "unlabelled films refused before" in done.stdout
    for args, words in (
        ([str(site / "labelled"), "--min-per-class", "-5"], "min_per_class must be"),
        ([str(site / "labelled"), "--prevalence", "1.5"], "prevalence must be"),
        (["--unlabeled", str(site / "labelled")], "holds labelled class folders"),
    ):
        refused = subprocess.run(
            [sys.executable, "-m", "pneumo", "calibrate", *args, "--out", str(tmp_path / "n")], capture_output=True, text=True, timeout=300
        )
        assert (
            refused.returncode == 2
            and refused.stderr.startswith("error:")
            and words in refused.stderr
            and "Traceback" not in refused.stderr
        )
        assert not (tmp_path / "n").exists()
    assert SHARED.is_dir()
