"""The `pneumo` command as a user runs it: real subprocesses, real data, exit codes and messages."""
from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import pneumo as pneumo_package


def pneumo(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "pneumo", *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"pneumo {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    message = " ".join(proc.stderr.split())  # Rich may wrap long lines
    assert message.startswith("error:"), message
    for fragment in fragments:
        assert fragment in message, message


def test_summary_json(kaggle_root: Path) -> None:
    summary = json.loads(pneumo("data", "summary", kaggle_root, "--json").stdout)
    assert summary["layout"] == "kaggle"
    assert summary["splits"]["train"]["classes"] == {"NORMAL": 80, "PNEUMONIA": 120}
    assert summary["splits"]["test"]["images"] == 50
    assert summary["splits"]["train"]["class_weights"]["NORMAL"] == pytest.approx(200 / 160)


def test_summary_table_names_the_counts(kaggle_root: Path) -> None:
    out = pneumo("data", "summary", kaggle_root).stdout
    assert "class weight NORMAL" in out and "120" in out


def test_preview_writes_a_grid(kaggle_root: Path, tmp_path: Path) -> None:
    pneumo("data", "preview", kaggle_root, "--out", tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as img:
        assert img.format == "PNG" and img.width > 500 and img.height > 500


def test_train_then_evaluate_from_the_command_line(kaggle_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = pneumo("train", "--config", "cpu", "--set", f"data={kaggle_root}", "--set", "epochs=2", "--set", "image_size=64", "--out", run, "--quiet").stdout
    assert "validation" in out and "ROC AUC" in out
    report_path = tmp_path / "report.json"
    table = pneumo("evaluate", kaggle_root / "chest_xray" / "test", "--model", run, "--json", report_path, "--bootstrap", "100").stdout
    assert "accuracy" in table and "95% CI" in table
    report = json.loads(report_path.read_text())
    for key in ("n", "threshold", "accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "predictions"):
        assert key in report
    assert report["n"] == 50 == len(report["predictions"])
    # the same set through the Kaggle root and --split gives the same numbers
    again = tmp_path / "again.json"
    shifted = pneumo("evaluate", kaggle_root, "--split", "test", "--model", run, "--json", again, "--bootstrap", "100", "--shifts").stdout
    assert "zoom in (central 85%)" in shifted
    again_report = json.loads(again.read_text())
    assert again_report["accuracy"] == report["accuracy"]
    assert again_report["shifted"]["none"]["recall"] == report["recall"]
    predictions = json.loads(pneumo("predict", kaggle_root / "chest_xray" / "test" / "NORMAL", "--model", run, "--json").stdout)
    assert len(predictions) == 20 and {p["label"] for p in predictions} <= {"NORMAL", "PNEUMONIA"}


def test_missing_folder(tmp_path: Path) -> None:
    assert_user_error(pneumo("data", "summary", tmp_path / "nowhere", check=False), "does not exist")


def test_empty_class_folder(tmp_path: Path) -> None:
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "PNEUMONIA").mkdir()
    assert_user_error(pneumo("data", "summary", tmp_path, check=False), "NORMAL", "has no .jpeg/.jpg/.png images")


def test_unreadable_image_is_named(trained_run: Path, small_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_folder, data)
    victim = sorted((data / "PNEUMONIA").glob("*.jpeg"))[0]
    victim.write_bytes(victim.read_bytes()[:300])
    assert_user_error(pneumo("evaluate", data, "--model", trained_run, check=False), victim.name)


def test_unknown_config_key(tmp_path: Path) -> None:
    assert_user_error(pneumo("train", "--config", "seed", "--set", "epohcs=3", "--out", tmp_path / "r", check=False), "unknown config key 'epohcs'")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: seed_cnn\nlearning_rate: 0.1\n")
    assert_user_error(pneumo("train", "--config", bad, "--out", tmp_path / "r", check=False), "unknown config key 'learning_rate'")


def test_predict_works_right_after_install_with_the_bundled_model(small_folder: Path) -> None:
    image = sorted((small_folder / "PNEUMONIA").glob("*.jpeg"))[0]
    out = pneumo("predict", image).stdout
    assert image.name in out and ("PNEUMONIA" in out or "NORMAL" in out)
    report = json.loads(pneumo("predict", image, "--json").stdout)[0]
    stored = json.loads((Path(pneumo_package.__file__).parent / "weights" / "meta.json").read_text())["threshold"]
    assert 0.0 <= report["probability"] <= 1.0 and report["threshold"] == pytest.approx(stored)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_training_keeps_a_complete_checkpoint(small_folder: Path, tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    args = ["train", "--config", "seed", "--set", f"data={small_folder}", "--set", "image_size=64", "--set", "epochs=10000", "--out", run, "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "pneumo", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    meta = run / "checkpoints" / "last" / "meta.json"
    deadline = time.monotonic() + 300
    while not meta.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    from pneumo.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "last").meta["epoch"] >= 1
