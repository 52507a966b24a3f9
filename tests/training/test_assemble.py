"""Assembling trained runs into one model, judged on the images none of them trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pneumo.config import load_config
from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.deploy.onnx import export
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import load_model
from pneumo.tasks import pneumonia_probability
from pneumo.training.assemble import ensemble
from pneumo.training.loop import train

pytestmark = pytest.mark.slow  # trains its members: several training runs


def _quiet() -> dict:
    return {"progress": False, "n_boot": 50}


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, kaggle_root: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    runs = []
    for seed in (0, 1):
        cfg = load_config("cpu", [f"data={kaggle_root}", "image_size=64", "epochs=2", "batch_size=16", "split_seed=0", f"seed={seed}"])
        runs.append(train(cfg, out=root / f"s{seed}", **_quiet()).run_dir)
    return runs


def test_members_with_one_split_seed_share_their_validation_images(members: list[Path]) -> None:
    vals = [{line.split(",")[0] for line in (m / "split.csv").read_text().splitlines() if line.endswith(",val")} for m in members]
    assert vals[0] == vals[1] and vals[0]


def test_an_ensemble_is_one_calibrated_model_that_exports_to_one_graph(members: list[Path], small_folder: Path, tmp_path: Path) -> None:
    report = ensemble(members, out=tmp_path / "ens", n_boot=50, progress=False).report
    model = load_model(tmp_path / "ens")
    assert model.meta.architecture == "ensemble" and len(model.meta.members) == 2
    assert model.meta.threshold == report["threshold"] and model.meta.temperature == report["calibration"]["temperature"]
    n_val = sum(line.endswith(",val") for line in (members[0] / "split.csv").read_text().splitlines())
    assert report["n"] == n_val and {"shifted", "calibration", "cam_frame_share", "ece"} <= set(report)
    assert json.loads((tmp_path / "ens" / "val_report.json").read_text())["n"] == n_val
    assert model.with_feature_check().feature_check is not None  # the input check fitted on the ensemble's features
    films = sorted((small_folder / "PNEUMONIA").glob("*.jpeg"))[:6]
    images = np.stack([load_image(f, 64) for f in films])
    # the members' calibrated probabilities, averaged, then the ensemble's own temperature
    members_p = np.mean([load_model(m).class_probabilities(images) for m in members], axis=0)
    from pneumo.evaluation.calibration import apply_temperature

    np.testing.assert_allclose(model.class_probabilities(images), apply_temperature(members_p, model.meta.temperature), atol=1e-4)
    exported = export(model, out=tmp_path / "ens.onnx", check_images=images)
    assert exported.max_abs_diff <= 1e-4
    with pytest.raises(PneumoError, match="is an ensemble already and cannot be a member of another; give its members instead"):
        ensemble([tmp_path / "ens", members[0]], out=tmp_path / "nested", progress=False)
    np.testing.assert_allclose(
        pneumonia_probability(OnnxModel.load(tmp_path / "ens.onnx").class_probabilities(images)),
        model.pneumonia_probability(images),
        atol=1e-4,
    )


def test_what_cannot_be_an_ensemble_is_refused(members: list[Path], small_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="at least one"):
        ensemble([], out=tmp_path / "none", progress=False)
    other = train(
        load_config("cpu", [f"data={small_folder}", "image_size=96", "epochs=1", "batch_size=16", "split_seed=0"]),
        out=tmp_path / "big",
        **_quiet(),
    )
    with pytest.raises(PneumoError, match="share task and input size"):
        ensemble([members[0], other.run_dir], out=tmp_path / "mixed", progress=False)
    with pytest.raises(PneumoError, match="calibration must be one of 'none', 'val', 'shift'; got 'platt'"):
        ensemble(members, out=tmp_path / "x", calibration="platt", progress=False)


def test_one_model_is_recalibrated_on_its_own_validation_images(members: list[Path], kaggle_root: Path, tmp_path: Path) -> None:
    report = ensemble(members[:1], out=tmp_path / "again", calibration="shift", n_boot=50, progress=False).report
    before, after = load_model(members[0]), load_model(tmp_path / "again")
    assert after.meta.architecture == before.meta.architecture and after.meta.weights_sha256 == before.meta.weights_sha256
    assert after.meta.temperature == report["calibration"]["temperature"] and after.meta.config == before.meta.config
    assert report["roc_auc"] == pytest.approx(
        json.loads((members[0] / "val_report.json").read_text())["roc_auc"], abs=1e-6
    )  # same images, same ranking


def test_data_other_than_the_members_was_trained_on_is_refused(members: list[Path], small_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="not the ones .* was trained on"):
        ensemble(members, out=tmp_path / "ens", data=small_folder, progress=False)


def test_the_command_assembles_and_says_where(members: list[Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pneumo", "ensemble", *map(str, members), "--out", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "validation" in done.stdout and "--model" in done.stdout and load_model(tmp_path / "e").meta.architecture == "ensemble"
    again = subprocess.run(
        [sys.executable, "-m", "pneumo", "ensemble", *map(str, members), "--out", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 2 and again.stderr.startswith("error:") and "--overwrite" in again.stderr


def test_outlier_films_can_be_named_where_the_members_had_none(members: list[Path], shared_data: Path, tmp_path: Path) -> None:
    """Members trained on a machine without the adult films (outliers: none there) still get an ensemble with a probe."""
    adults = shared_data / "ood" / "adult_other_hospitals"
    assert json.loads((members[0] / "model" / "meta.json").read_text())["config"]["outliers"] == "auto"  # none beside kaggle_root
    probed = ensemble(members, out=tmp_path / "probed", outliers=adults, n_boot=50, progress=False).report
    assert probed["input_check"]["probe"] and probed["input_check"]["n_outliers"] == len(list(adults.iterdir()))


def test_a_lone_run_folder_is_one_member_and_anything_else_is_named(tmp_path: Path) -> None:
    """A str is one member, never its characters; a wrong member is named by its place (refused before any work)."""
    with pytest.raises(PneumoError, match="nowhere does not exist"):
        ensemble(str(tmp_path / "nowhere"), out=tmp_path / "a", progress=False)
    with pytest.raises(PneumoError, match=r"^members\[1\] must be a run or checkpoint folder.*; got 3 \(int\)$"):
        ensemble([tmp_path, 3], out=tmp_path / "b", progress=False)  # type: ignore[list-item]
    assert not (tmp_path / "b").exists()
