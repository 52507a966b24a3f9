"""The run folder: made for a new run, replaced only when it is recognisably pneumo's, checked before
a run is resumed, cleared of interrupted writes, and its history file.

test_state.py covers --overwrite on a full run and model folder, what it refuses to delete, folders
that are files or devices, and clearing temporary files on resume; these cover the rest.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from pneumo.config import Config, config_to_dict, load_config
from pneumo.errors import PneumoError
from pneumo.training.run_dir import (
    REPORT,
    complete_best_copy,
    open_run,
    prepare_run_dir,
    remove_leftover_temps,
    resume_run_dir,
    write_history,
)
from pneumo.training.state import STATE, STATE_FORMAT_VERSION, RunSoFar


def _config(epochs: int = 2, **changes: object) -> Config:
    return load_config("seed", [f"epochs={epochs}", *(f"{k}={v}" for k, v in changes.items())])


def _started_run(folder: Path, epochs: int = 2, done: int | None = None, finished: bool = False) -> Path:
    """A run folder as open_run leaves it, optionally with `done` epochs of saved state and the final report."""
    run, _ = open_run(_config(epochs), folder, overwrite=False, resume=False)
    if done is not None:
        last = run / "checkpoints" / "last"
        last.mkdir(parents=True)
        (last / STATE).write_text(json.dumps({"format_version": STATE_FORMAT_VERSION, "epoch": done}))
    if finished:
        (run / REPORT).write_text("{}")
    return run


# --- a new run's folder --------------------------------------------------------------------------


def test_a_new_folder_is_made_with_its_parents_and_an_empty_one_is_taken_as_it_is(tmp_path: Path) -> None:
    deep = tmp_path / "runs" / "2024" / "a"
    assert prepare_run_dir(deep, overwrite=False) == deep and deep.is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_run_dir(str(empty), overwrite=False) == empty


def test_a_folder_with_anything_in_it_needs_overwrite_and_keeps_its_files(tmp_path: Path) -> None:
    run = _started_run(tmp_path / "run")
    (run / "history.csv").write_text("epoch\n1\n")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(PneumoError, match=r"^.*run already exists and is not empty; choose another --out or pass --overwrite$"):
        prepare_run_dir(run, overwrite=False)
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_hidden_file_alone_makes_a_folder_not_empty(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".keep").write_text("")
    with pytest.raises(PneumoError, match="already exists and is not empty"):
        prepare_run_dir(tmp_path / "out", overwrite=False)
    with pytest.raises(PneumoError, match="does not look like a pneumo run folder"):
        prepare_run_dir(tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / ".keep").exists()


def test_overwrite_recognises_a_run_by_its_config_keys_not_a_full_load(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    """A config.yaml of an older pneumo (with keys this one no longer knows) is still pneumo's."""
    run = tmp_path / "old"
    run.mkdir()
    values = config_to_dict(_config()) | {"a_key_from_an_older_version": 3}
    (run / "config.yaml").write_text(yaml.safe_dump(values))
    (run / "history.csv").write_text("epoch\n1\n")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"e" * 10)
    prepare_run_dir(run, overwrite=True)
    assert pneumo_log.messages and pneumo_log.messages[0].startswith(f"removing the previous run in {run} (3 files,")
    assert list(run.iterdir()) == []


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (
            {"architecture": "resnet18"},
            r"holds a meta\.json that is not a pneumo checkpoint's; refusing to overwrite it: choose another --out",
        ),
        ("not json at all", r"holds a meta\.json that is not a pneumo checkpoint's"),
    ],
)
def test_a_foreign_meta_json_is_not_taken_for_a_model_folder(tmp_path: Path, meta: object, message: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    (folder / "weights.safetensors").write_bytes(b"w")
    with pytest.raises(PneumoError, match=message):
        prepare_run_dir(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "weights.safetensors"]


def test_a_config_yaml_that_is_not_a_mapping_is_foreign(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "config.yaml").write_text("- data\n- model\n- epochs\n- seed\n")  # the key names, but as a list
    with pytest.raises(PneumoError, match="holds a config.yaml that is not a pneumo run's config"):
        prepare_run_dir(folder, overwrite=True)
    assert (folder / "config.yaml").exists()


# --- open_run ------------------------------------------------------------------------------------


def test_a_new_run_records_its_config_and_reads_it_back_the_same(tmp_path: Path) -> None:
    config = _config(epochs=3, lr=0.02)
    run, returned = open_run(config, tmp_path / "run", overwrite=False, resume=False)
    assert returned is config and sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    assert load_config(run / "config.yaml") == config
    assert list(yaml.safe_load((run / "config.yaml").read_text())) == list(config_to_dict(config))  # in the config's order


def test_open_run_refuses_contradictory_requests_before_touching_anything(tmp_path: Path) -> None:
    run = _started_run(tmp_path / "run")
    before = (run / "config.yaml").read_bytes()
    with pytest.raises(PneumoError, match="^resume continues a run and overwrite replaces it; ask for one of them$"):
        open_run(_config(), run, overwrite=True, resume=True)
    with pytest.raises(PneumoError, match=r"^a new run needs a config \(only a resumed run reads its own\)$"):
        open_run(None, tmp_path / "new", overwrite=False, resume=False)
    assert (run / "config.yaml").read_bytes() == before and not (tmp_path / "new").exists()


def test_overwrite_replaces_the_config_of_the_previous_run(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    run = _started_run(tmp_path / "run", epochs=2)
    _, config = open_run(_config(epochs=5), run, overwrite=True, resume=False)
    assert load_config(run / "config.yaml").epochs == 5 == config.epochs
    assert len(pneumo_log.messages) == 1 and "removing the previous run" in pneumo_log.messages[0]


# --- resuming ------------------------------------------------------------------------------------


def test_a_resumed_run_keeps_the_config_it_started_with(tmp_path: Path) -> None:
    run = _started_run(tmp_path / "run", epochs=4, done=1)
    assert resume_run_dir(run, None) == (run, _config(4))
    assert resume_run_dir(str(run), _config(4))[1] == _config(4)  # the same config again is fine
    with pytest.raises(
        PneumoError,
        match=r"in epochs \(run: 4, given: 5\), lr \(run: 0\.001, given: 0\.5\); a resumed run keeps its config: give no other$",
    ):
        resume_run_dir(run, _config(5, lr=0.5))


def test_an_edited_config_yaml_may_only_grow_epochs_or_move_the_data_and_each_resume_is_recorded(
    tmp_path: Path, pneumo_log: pytest.LogCaptureFixture
) -> None:
    import yaml

    from pneumo.config import config_to_dict
    from pneumo.models import create_model
    from pneumo.models.checkpoint import save_checkpoint
    from pneumo.models.meta import CheckpointMeta

    run = _started_run(tmp_path / "run", epochs=4, done=2)
    trained = config_to_dict(_config(4))
    meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], 1, 64, 0.0, 1.0, 0.5, epoch=2, config=trained)
    save_checkpoint(run / "checkpoints" / "last", create_model("seed_cnn", image_size=64), meta)

    def edit(**values: object) -> None:
        (run / "config.yaml").write_text(yaml.safe_dump({**trained, **values}, sort_keys=False))

    for values, listed in (({"lr": 0.5}, "lr 0.001 -> 0.5"), ({"epochs": 2}, "epochs 4 -> 2"), ({"epochs": 6, "seed": 3}, "seed 0 -> 3")):
        edit(**values)
        with pytest.raises(
            PneumoError, match=f"config.yaml was edited since the run trained \\({listed}\\); a resumed run keeps its recipe"
        ):
            resume_run_dir(run, None)
    edit(epochs=6, workers=1)
    assert resume_run_dir(run, None)[1].epochs == 6
    assert pneumo_log.messages == ["resuming with epochs 4 -> 6 (config.yaml)", "resuming with workers 0 -> 1 (config.yaml)"]
    recorded = json.loads((run / "resumes.json").read_text())
    assert [(r["after_epoch"], r["changed"]) for r in recorded] == [(2, {"epochs": [4, 6], "workers": [0, 1]})]


def test_only_a_pneumo_run_folder_can_be_resumed(tmp_path: Path) -> None:
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(
            PneumoError, match=r"is not a pneumo run folder \(it has no config\.yaml\); give the folder of the run to continue"
        ):
            resume_run_dir(folder, None)


def test_a_finished_run_is_refused_but_one_stopped_before_its_report_is_not(tmp_path: Path) -> None:
    finished = _started_run(tmp_path / "done", epochs=2, done=2, finished=True)
    with pytest.raises(PneumoError, match=f"run {finished} already finished all 2 epochs; its model is in {finished / 'model'}"):
        resume_run_dir(finished, None)
    # every epoch trained, stopped while writing the model: resuming finishes it
    assert resume_run_dir(_started_run(tmp_path / "unreported", epochs=2, done=2), None)[1].epochs == 2
    # a report but epochs still to train (a run whose state was saved again by hand): not finished
    assert resume_run_dir(_started_run(tmp_path / "partway", epochs=2, done=1, finished=True), None)[1].epochs == 2
    # no state at all: the training loop decides (it trains from the start)
    assert resume_run_dir(_started_run(tmp_path / "nostate", epochs=2, finished=True), None)[1].epochs == 2


def test_a_damaged_state_record_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    run = _started_run(tmp_path / "run", done=1)
    (run / "checkpoints" / "last" / STATE).write_text("{not json")
    with pytest.raises(PneumoError, match=r"state\.json is not readable JSON"):
        resume_run_dir(run, None)


# --- leftovers, history, best copy ----------------------------------------------------------------


def test_leftover_temporary_files_go_and_nothing_else_does(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    run = _started_run(tmp_path / "run")
    (run / "model").mkdir()
    (run / "model" / ".tmpAb12Cd").write_bytes(b"s" * 300)  # safetensors' own temporary name
    (run / ".val_report.json.k2j4h6g8.tmp").write_bytes(b"r" * 200)
    keep = {"notes.tmp": b"mine", "history.csv": b"epoch\n", "model/weights.safetensors": b"w"}
    for name, data in keep.items():
        (run / name).write_bytes(data)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / ".history.csv.abcd1234.tmp").write_bytes(b"x")
    (run / "linked").symlink_to(outside, target_is_directory=True)  # never followed
    assert remove_leftover_temps(run) == 500
    assert pneumo_log.messages == [f"removed 2 temporary files (500 bytes) that interrupted writes left in {run}"]
    assert all((run / name).read_bytes() == data for name, data in keep.items())
    assert not (run / "model" / ".tmpAb12Cd").exists() and not (run / ".val_report.json.k2j4h6g8.tmp").exists()
    assert (outside / ".history.csv.abcd1234.tmp").exists()
    pneumo_log.clear()
    assert remove_leftover_temps(run) == 0 and pneumo_log.messages == []  # nothing to remove: nothing said


def test_one_leftover_is_named_in_the_singular(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    (tmp_path / ".config.yaml.abcdefgh.tmp").write_bytes(b"c" * 10)
    remove_leftover_temps(tmp_path)
    assert pneumo_log.messages == [f"removed 1 temporary file (10 bytes) that interrupted writes left in {tmp_path}"]


def test_history_is_rewritten_whole_with_the_first_rows_columns(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    rows = [{"epoch": 1, "lr": 0.001, "train_loss": 0.69, "val_roc_auc": float("nan")}]
    write_history(path, rows)
    rows.append({"epoch": 2, "lr": 0.0005, "train_loss": 0.51, "val_roc_auc": 0.8})
    write_history(path, rows)
    with path.open(newline="") as fh:
        read = list(csv.DictReader(fh))
    assert [list(r) for r in read] == [["epoch", "lr", "train_loss", "val_roc_auc"]] * 2
    assert [r["epoch"] for r in read] == ["1", "2"] and float(read[1]["train_loss"]) == 0.51
    assert read[0]["val_roc_auc"] == "nan"  # a metric without a value is written as such, not left out
    assert sorted(os.listdir(tmp_path)) == ["history.csv"]  # written through a temporary file, none left


def test_a_run_without_a_best_epoch_needs_no_copy(tmp_path: Path) -> None:
    complete_best_copy(tmp_path / "checkpoints", RunSoFar())  # nothing saved yet: nothing to check or copy
    assert not (tmp_path / "checkpoints").exists()
