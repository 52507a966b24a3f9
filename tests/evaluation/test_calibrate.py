"""`pneumo calibrate`: a model refitted to a site's labelled films, written as a model folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.evaluation.evaluate import evaluate
from pneumo.evaluation.site import calibrate_to_site
from pneumo.inference.predict import load_model, predict
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CheckpointMeta
from pneumo.models.registry import create_model
from tests.conftest import copy_class_folders


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_class_folders(tmp_path_factory.mktemp("site") / "films", {"NORMAL": 20, "PNEUMONIA": 20}, offset=5)


def test_the_bundled_model_refitted_to_twenty_films_a_class(site: Path, tmp_path: Path) -> None:
    result = calibrate_to_site(site, None, tmp_path / "site-model", n_boot=200, progress=False)
    meta = load_model(tmp_path / "site-model").meta
    assert meta.threshold == result.threshold and meta.temperature == pytest.approx(result.temperature)
    assert meta.threshold_method == "site" and meta.site_calibration["n_normal"] == 20 and meta.site_calibration["n_pneumonia"] == 20
    assert len(meta.site_calibration["fingerprint"]) == 32 and set(meta.site_calibration["ci95"]) >= {"recall", "specificity"}
    assert meta.weights_sha256 == load_model(None).meta.weights_sha256  # the weights are the bundled ones
    assert (tmp_path / "site-model" / "reliability.png").stat().st_size > 1000
    # the folder works wherever a model does, at its new operating point
    report = evaluate(site, model=tmp_path / "site-model", n_boot=50, progress=False)
    assert report["threshold"] == result.threshold and report["accuracy"] >= 0.9
    assert [p.threshold for p in predict([site / "NORMAL"], model=tmp_path / "site-model")] == [result.threshold] * 20
    saved = json.loads((tmp_path / "site-model" / "site_calibration.json").read_text())
    assert saved["site"]["n"] == 40 and saved["before"]["threshold"] == load_model(None).threshold


def test_too_few_films_are_refused_with_what_is_short(tmp_path: Path) -> None:
    few = copy_class_folders(tmp_path / "few", {"NORMAL": 12, "PNEUMONIA": 25})
    with pytest.raises(PneumoError, match="at least 20 labelled films of each class.*12 NORMAL and 25 PNEUMONIA"):
        calibrate_to_site(few, None, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_an_uncertain_operating_point_is_warned_about(site: Path, tmp_path: Path) -> None:
    untrained = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=64, mean=0.0, std=1.0, threshold=0.5)
    ckpt = save_checkpoint(tmp_path / "untrained", create_model("seed_cnn", image_size=64), untrained)
    result = calibrate_to_site(site, ckpt, tmp_path / "out", n_boot=200, progress=False)
    assert result.warnings and any("does not separate" in w or "label more films" in w for w in result.warnings)
    with pytest.raises(PneumoError, match="already exists"):
        calibrate_to_site(site, ckpt, tmp_path / "out", progress=False)


@pytest.mark.slow  # a new process loading torch
def test_the_command_prints_before_and_after(site: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pneumo", "calibrate", str(site), "--out", str(tmp_path / "m"), "--bootstrap", "100"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "before" in done.stdout and "after" in done.stdout and "--model" in done.stdout
    refused = subprocess.run([sys.executable, "-m", "pneumo", "calibrate", str(site / "NORMAL"), "--out", str(tmp_path / "n")], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.startswith("error:") and "Traceback" not in refused.stderr
    assert np.isfinite(json.loads((tmp_path / "m" / "meta.json").read_text())["temperature"])


def test_overwrite_replaces_only_a_pneumo_model_folder_and_never_the_source(site: Path, tmp_path: Path) -> None:
    first = calibrate_to_site(site, None, tmp_path / "site-model", n_boot=20, progress=False)
    (tmp_path / "site-model" / "notes.txt").write_text("mine")
    with pytest.raises(PneumoError, match="notes.txt.*refusing"):
        calibrate_to_site(site, None, tmp_path / "site-model", n_boot=20, overwrite=True, progress=False)
    assert (tmp_path / "site-model" / "notes.txt").read_text() == "mine" and (tmp_path / "site-model" / "meta.json").is_file()
    (tmp_path / "site-model" / "notes.txt").unlink()
    again = calibrate_to_site(site, None, tmp_path / "site-model", n_boot=20, overwrite=True, progress=False)
    assert again.threshold == first.threshold
    with pytest.raises(PneumoError, match="is the model being calibrated"):
        calibrate_to_site(site, tmp_path / "site-model", tmp_path / "site-model", n_boot=20, overwrite=True, progress=False)
    assert load_model(tmp_path / "site-model").threshold == first.threshold
