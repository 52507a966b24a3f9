"""pneumo.evaluation.overlap: a model knows its training films by content and evaluate warns on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pneumo.data.layout import discover
from pneumo.evaluation.evaluate import evaluate
from pneumo.evaluation.overlap import TRAINING_FILMS, model_folder, overlap_warning, training_overlap


def test_evaluating_on_the_training_films_warns_and_names_the_honest_command(trained_run: Path, kaggle_root: Path) -> None:
    report = evaluate(kaggle_root, model=trained_run, split="train", n_boot=20, progress=False)
    overlap = report.training_overlap
    assert overlap["n"] == 200 and overlap["train"] + overlap["val"] == 200 and overlap["train"] > 120
    (warning,) = report.warnings
    assert f"{overlap['train']} of 200 films" in warning and "optimistic" in warning
    assert f"pneumo evaluate {trained_run}/split.csv --split val --model {trained_run}" in warning


def test_the_runs_own_validation_films_read_back_from_split_csv_carry_no_warning(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # read from another folder than the one it was written from
    report = evaluate(trained_run / "split.csv", model=trained_run, split="val", n_boot=20, progress=False)
    assert report.training_overlap["train"] == 0 and report.training_overlap["val"] == report.n > 0
    assert report.warnings == []


def test_overlap_is_by_content_not_by_name(trained_run: Path, kaggle_root: Path, tmp_path: Path) -> None:
    trained = [r for r in discover(trained_run / "split.csv").split("train")][:3]
    for i, r in enumerate(trained):
        shutil.copy(r.path, tmp_path / f"renamed-{i}.png")
    records = [r.__class__(tmp_path / f"renamed-{i}.png", r.label, r.pathogen, r.patient_id) for i, r in enumerate(trained)]
    folder = model_folder(trained_run)
    assert (folder / TRAINING_FILMS).is_file()
    assert training_overlap(folder, records) == {"n": 3, "train": 3, "val": 0}


def test_the_bundled_model_knows_its_training_films(shared_data: Path) -> None:
    records = discover(shared_data / "chest_xray" / "train").split(None)[:40]
    overlap = training_overlap(model_folder(None), records)
    assert overlap["train"] + overlap["val"] == 40 and overlap["train"] > 0
    assert "evaluate on films it never saw" in overlap_warning(overlap)


def test_a_model_without_the_record_evaluates_without_a_warning(trained_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_folder(trained_run), copy)
    (copy / TRAINING_FILMS).unlink()
    assert training_overlap(copy, discover(trained_run / "split.csv").split("train")[:5]) is None
    assert overlap_warning(None) is None
