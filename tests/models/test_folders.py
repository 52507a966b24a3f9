"""prepare_output_folder: a run or model folder is emptied only when it is recognisably pneumo's and holds only
pneumo's files; everything else is refused whole, before anything is deleted, with a message saying what to do.

The model-folder cases use the bundled model's real meta.json, so a pneumo-written record of today's format is
what is recognised.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pneumo.errors import PneumoError
from pneumo.models.folders import (
    CHECKPOINT_LAYOUT,
    MODEL_LAYOUT,
    REPORT,
    RUN_LAYOUT,
    TRAINING_FILMS,
    prepare_output_folder,
)
from pneumo.models.meta import FEATURES, META, WEIGHTS

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "pneumo" / "weights"
CONFIG = {"data": "data/chest_xray", "model": "seed_cnn", "epochs": 3, "seed": 0, "image_size": 64}


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder`: files by content, folders as None."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def _run(folder: Path) -> Path:
    """A finished run folder as `pneumo train` leaves it: config, history, figures, checkpoints, model, tensorboard."""
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "checkpoints" / "last").mkdir()
    (folder / "model").mkdir()
    (folder / "tensorboard").mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    for name in ("split.csv", "history.csv", "history.png", REPORT, "roc.png", "confusion.png", "reliability.png"):
        (folder / name).write_bytes(b"r" * 10)
    for sub in ("checkpoints/best", "checkpoints/last", "model"):
        for name in (WEIGHTS, META, FEATURES, TRAINING_FILMS):
            (folder / sub / name).write_bytes(b"c" * 100)
    (folder / "checkpoints" / "last" / "state.json").write_text("{}")
    (folder / "checkpoints" / "last" / "state-0003-ab12.safetensors").write_bytes(b"s" * 1000)
    (folder / "tensorboard" / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"t" * 50)
    return folder


def _model(folder: Path) -> Path:
    """A model folder as `pneumo ensemble` or `pneumo calibrate` leaves it, with the bundled model's own meta.json."""
    folder.mkdir(parents=True)
    shutil.copy(BUNDLED / META, folder / META)
    shutil.copy(BUNDLED / REPORT, folder / REPORT)
    shutil.copy(BUNDLED / TRAINING_FILMS, folder / TRAINING_FILMS)
    for name in (WEIGHTS, FEATURES, "site_calibration.json", "roc.png"):
        (folder / name).write_bytes(b"m" * 10)
    return folder


# --- new and empty folders ------------------------------------------------------------------------


def test_a_new_folder_is_made_with_its_parents(tmp_path: Path) -> None:
    out = prepare_output_folder(tmp_path / "runs" / "first", overwrite=False)
    assert out == tmp_path / "runs" / "first" and out.is_dir() and list(out.iterdir()) == []


def test_a_string_path_is_accepted_and_an_empty_folder_needs_no_overwrite(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert prepare_output_folder(str(tmp_path / "empty"), overwrite=False) == tmp_path / "empty"


def test_a_file_in_the_way_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(PneumoError, match=r"--out .*out is a file, not a folder: give a folder to write into"):
        prepare_output_folder(tmp_path / "out", overwrite=True)
    assert (tmp_path / "out").read_text() == "not a folder"


# --- a folder with something in it ---------------------------------------------------------------


def test_a_folder_with_something_in_it_needs_overwrite(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    before = _tree(run)
    with pytest.raises(PneumoError) as err:
        prepare_output_folder(run, overwrite=False)
    assert str(err.value) == f"{run} already exists and is not empty; choose another --out or pass --overwrite"
    assert _tree(run) == before


def test_overwrite_empties_a_run_folder_and_says_how_much(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    run = _run(tmp_path / "run")
    files = [p for p in run.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert prepare_output_folder(run, overwrite=True) == run
    assert pneumo_log.messages == [f"removing the previous run in {run} ({len(files)} files, {size / 1000:.1f} kB)"]
    assert len(files) == 23 and run.is_dir() and list(run.iterdir()) == []


def test_overwrite_empties_a_model_folder_written_by_pneumo(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    model = _model(tmp_path / "ensemble")
    prepare_output_folder(model, overwrite=True)
    assert len(pneumo_log.messages) == 1 and pneumo_log.messages[0].startswith(f"removing the previous model in {model} (7 files, ")
    assert list(model.iterdir()) == []


def test_leftovers_of_killed_writes_and_file_browser_junk_go_too(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    (run / ".history.csv.abcd1234.tmp").write_text("half")
    (run / "checkpoints" / "best" / ".tmpAb12Cd").write_bytes(b"half")
    (run / ".DS_Store").write_bytes(b"junk")
    prepare_output_folder(run, overwrite=True)
    assert list(run.iterdir()) == []


def test_an_older_runs_config_is_still_recognised(tmp_path: Path) -> None:
    """Only the keys every run ever wrote are required; extra or renamed keys of another version do not matter."""
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": "x", "model": "resnet18", "epochs": 1, "seed": 7, "lr_schedule": "old-name"}))
    (run / "history.csv").write_text("epoch\n")
    prepare_output_folder(run, overwrite=True)
    assert list(run.iterdir()) == []


# --- what is refused, whole ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intruder", "named"),
    [
        ("notes.txt", "notes.txt"),
        ("src/main.py", "src/"),
        ("checkpoints/best/thesis.tex", "checkpoints/best/thesis.tex"),
        ("model/pneumo.onnx", "model/pneumo.onnx"),
        ("meta.json", "meta.json"),
    ],
)
def test_a_run_folder_with_anything_else_is_refused_and_left_alone(tmp_path: Path, intruder: str, named: str) -> None:
    run = _run(tmp_path / "run")
    (run / intruder).parent.mkdir(parents=True, exist_ok=True)
    (run / intruder).write_text("precious")
    before = _tree(run)
    with pytest.raises(PneumoError) as err:
        prepare_output_folder(run, overwrite=True)
    assert str(err.value).startswith(f"{run} holds {named}, which a pneumo run folder never has; refusing to delete it")
    assert _tree(run) == before


def test_a_model_folder_holding_run_files_is_refused(tmp_path: Path) -> None:
    """A model folder's layout is its own: a history.csv has no business there."""
    model = _model(tmp_path / "model")
    (model / "history.csv").write_text("epoch\n")
    with pytest.raises(PneumoError, match=r"holds history\.csv, which a pneumo model folder never has"):
        prepare_output_folder(model, overwrite=True)
    assert (model / "history.csv").exists() and (model / META).exists()


def test_a_symlink_inside_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "history.csv").write_text("someone else's")
    run = _run(tmp_path / "run")
    (run / "history.csv").unlink()
    (run / "history.csv").symlink_to(outside / "history.csv")
    with pytest.raises(PneumoError, match=r"holds history\.csv, a symlink"):
        prepare_output_folder(run, overwrite=True)
    assert (outside / "history.csv").read_text() == "someone else's" and (run / "config.yaml").exists()


@pytest.mark.parametrize(
    "config",
    ["model: seed_cnn\nepochs: 3\n", "- data\n- model\n- epochs\n- seed\n", "data: [unclosed\n", "just words\n"],
    ids=["missing-keys", "a-list", "broken-yaml", "a-string"],
)
def test_a_config_yaml_that_is_not_a_runs_is_refused(tmp_path: Path, config: str) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.yaml").write_text(config)
    (folder / "history.csv").write_text("epoch\n")
    with pytest.raises(PneumoError) as err:
        prepare_output_folder(folder, overwrite=True)
    assert str(err.value) == (
        f"{folder} holds a config.yaml that is not a pneumo run's config; refusing to overwrite it: choose another --out"
    )
    assert (folder / "config.yaml").read_text() == config


@pytest.mark.parametrize(
    "meta",
    [json.dumps({"architecture": "x", "weights_sha256": "0" * 64}), "{not json", json.dumps([1, 2]), "\udcff"],
    ids=["missing-format-version", "broken-json", "a-list", "not-utf8"],
)
def test_a_meta_json_that_is_not_a_checkpoints_is_refused(tmp_path: Path, meta: str) -> None:
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / META).write_bytes(meta.encode("utf-8", "surrogateescape"))
    with pytest.raises(PneumoError) as err:
        prepare_output_folder(folder, overwrite=True)
    assert str(err.value) == f"{folder} holds a meta.json that is not a pneumo checkpoint's; refusing to overwrite it: choose another --out"
    assert (folder / META).exists()


def test_a_folder_that_is_not_pneumos_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "home"
    (folder / "photos").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(
        PneumoError,
        match=r"does not look like a pneumo run folder \(it has no config\.yaml or meta\.json of pneumo's\); "
        r"refusing to overwrite it: choose another --out$",
    ):
        prepare_output_folder(folder, overwrite=True)
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_a_config_yaml_folder_is_not_taken_for_a_config(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    (folder / "config.yaml").mkdir(parents=True)
    with pytest.raises(PneumoError, match="does not look like a pneumo run folder"):
        prepare_output_folder(folder, overwrite=True)


# --- the layouts ---------------------------------------------------------------------------------


def test_the_layouts_name_what_train_ensemble_and_calibrate_write() -> None:
    assert {WEIGHTS, META, FEATURES, TRAINING_FILMS} <= set(CHECKPOINT_LAYOUT)
    assert RUN_LAYOUT["model"] is CHECKPOINT_LAYOUT and RUN_LAYOUT["checkpoints"] == {"last": CHECKPOINT_LAYOUT, "best": CHECKPOINT_LAYOUT}
    assert {"config.yaml", "history.csv", REPORT} <= set(RUN_LAYOUT) and META not in RUN_LAYOUT
    assert set(CHECKPOINT_LAYOUT) <= set(MODEL_LAYOUT) and {REPORT, "site_calibration.json"} <= set(MODEL_LAYOUT)
    assert "config.yaml" not in MODEL_LAYOUT and "history.csv" not in MODEL_LAYOUT
