"""The `pneumo` command as a user runs it: real subprocesses, real data, exit codes and messages."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import pneumo as pneumo_package

pytestmark = pytest.mark.slow  # each test runs the pneumo command in a new process, most of them training


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
    out = pneumo(
        "train", "--config", "cpu", "--set", f"data={kaggle_root}", "--set", "epochs=2", "--set", "image_size=64", "--out", run, "--quiet"
    ).stdout
    assert "validation" in out and "ROC AUC" in out
    report_path = tmp_path / "report.json"
    table = pneumo(
        "evaluate",
        kaggle_root / "chest_xray" / "test",
        "--model",
        run,
        "--json",
        report_path,
        "--bootstrap",
        "100",
        "--plots",
        tmp_path / "plots",
    ).stdout
    assert "accuracy" in table and "95% CI" in table
    assert (
        f"wrote roc.png, confusion.png and reliability.png to {tmp_path / 'plots'}" in table and (tmp_path / "plots" / "roc.png").is_file()
    )
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
    assert_user_error(pneumo("evaluate", data, "--model", trained_run, "--strict", check=False), victim.name)
    skipping = pneumo("evaluate", data, "--model", trained_run, "--bootstrap", "50")
    assert "skipped 1 of 120 files" in skipping.stderr and victim.name in skipping.stderr and "119 images" in skipping.stdout


def test_unknown_config_key(tmp_path: Path) -> None:
    assert_user_error(
        pneumo("train", "--config", "seed", "--set", "epohcs=3", "--out", tmp_path / "r", check=False), "unknown config key 'epohcs'"
    )
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


@pytest.mark.slow  # whole commands in new processes
@pytest.mark.parametrize("columns", ["0", "3"])
def test_a_terminal_width_too_small_to_print_in_is_ignored(small_folder: Path, columns: str) -> None:
    """COLUMNS=0 made every table and error line vanish, exit 0; a long message is one line in a pipe."""
    film = sorted((small_folder / "NORMAL").glob("*.jpeg"))[0]
    env = {**os.environ, "COLUMNS": columns}

    def run(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pneumo", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)

    table = run("predict", film)
    assert (
        table.returncode == 0 and "bundled model, threshold" in table.stdout and ("NORMAL" in table.stdout or "PNEUMONIA" in table.stdout)
    )
    missing = run("predict", small_folder / ("a-long-name-" * 12 + ".jpeg"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1 and "does not exist" in missing.stderr


@pytest.mark.slow  # whole commands in new processes
def test_a_folder_of_films_ends_with_its_count(small_folder: Path, tmp_path: Path) -> None:
    """Hundreds of rows and their warnings push the table's title off the screen: the count comes last."""
    folder = tmp_path / "films"
    shutil.copytree(small_folder / "NORMAL", folder)
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8 not a film")
    answers = json.loads(pneumo("predict", folder, "--json").stdout)
    labels = [a["label"] for a in answers]
    last = pneumo("predict", folder).stdout.strip().splitlines()[-1]
    expected = ", ".join(f"{labels.count(c)} {c}" for c in ("NORMAL", "PNEUMONIA") if labels.count(c))
    assert last.startswith(f"{len(answers)} films: {expected}, {labels.count(None)} without a verdict"), last
    assert last.endswith("1 skipped (unreadable)"), last


def _ctrl_c_reaches_python() -> None:
    """In the child: SIGINT back to its default, which Python turns into KeyboardInterrupt. A suite
    started in the background of a shell without job control (`nohup ... &`) inherits SIGINT
    ignored, and Python keeps an ignored SIGINT ignored, as `nohup pneumo train &` should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_training_keeps_a_complete_checkpoint(small_folder: Path, tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "seed",
        "--set",
        f"data={small_folder}",
        "--set",
        "image_size=64",
        "--set",
        "epochs=10000",
        "--out",
        run,
        "--quiet",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pneumo", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_reaches_python,
    )
    meta = run / "checkpoints" / "last" / "meta.json"
    deadline = time.monotonic() + 300
    while not meta.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    from pneumo.inference.torch_backend import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "last").meta.epoch >= 1
    assert f"pneumo train --resume {run}`" in err.replace("\n", "")  # the real folder, not a placeholder


def test_resume_from_the_command_line(small_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pneumo",
            "train",
            "--config",
            "seed",
            "--set",
            f"data={small_folder}",
            "--set",
            "image_size=64",
            "--set",
            "epochs=6",
            "--out",
            str(run),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_reaches_python,
    )
    meta = run / "checkpoints" / "last" / "meta.json"
    deadline = time.monotonic() + 300
    while not meta.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    finished = pneumo("train", "--resume", run, "--quiet")
    assert "validation" in finished.stdout and (run / "val_report.json").exists()
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 6
    assert_user_error(pneumo("train", "--resume", run, check=False), "already finished")
    assert_user_error(pneumo("train", "--resume", run, "--set", "epochs=5", check=False), "leave out --config")
    assert_user_error(pneumo("train", "--config", "seed", check=False), "--out")


def test_predict_formats_globs_and_output_files(small_folder: Path, tmp_path: Path) -> None:
    pattern = str(small_folder / "NORMAL" / "IM-01*.jpeg")  # quoted: the shell does not expand it
    expected = sorted(p.name for p in (small_folder / "NORMAL").glob("IM-01*.jpeg"))
    assert expected, "the subset has IM-01* files"
    lines = pneumo("predict", pattern, "--format", "csv").stdout.splitlines()
    assert lines[0] == "path,probability,label,abstain,threshold,p_NORMAL,p_PNEUMONIA,warnings,abstain_reason"
    rows = [line.split(",") for line in lines[1:]]
    assert sorted(Path(r[0]).name for r in rows) == expected
    for r in rows:
        assert float(r[5]) + float(r[6]) == pytest.approx(1.0, abs=1e-5)
        assert r[3] == "false" and r[2] == ("PNEUMONIA" if float(r[1]) >= float(r[4]) else "NORMAL")
    out = tmp_path / "nested" / "predictions.json"
    pneumo("predict", small_folder / "PNEUMONIA", "--out", out)
    saved = json.loads(out.read_text())
    assert len(saved) == 60 and {"path", "probability", "label", "threshold", "class_probabilities"} <= set(saved[0])
    assert_user_error(pneumo("predict", small_folder, "--out", tmp_path / "p.txt", check=False), "p.txt", ".json or .csv")
    assert_user_error(pneumo("predict", small_folder, "--format", "xml", check=False), "unknown --format")
    assert_user_error(pneumo("predict", str(tmp_path / "none-*.png"), check=False), "no file matches")


def _without_training_extras(*args: object) -> subprocess.CompletedProcess:
    """`pneumo ARGS` in a Python where torch, MONAI, scikit-learn and matplotlib cannot be imported."""
    code = (
        "import sys\n"
        "for name in ('torch', 'monai', 'sklearn', 'matplotlib', 'safetensors', 'onnx'):\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = ['pneumo', *{[str(a) for a in args]!r}]\n"
        "from pneumo.cli import main\n"
        "main()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)


def test_predict_works_without_pytorch_through_the_bundled_onnx_export(small_folder: Path) -> None:
    files = sorted((small_folder / "PNEUMONIA").glob("*.jpeg"))[:3] + sorted((small_folder / "NORMAL").glob("*.jpeg"))[:3]
    light = _without_training_extras("predict", *files, "--format", "csv")
    assert light.returncode == 0, light.stderr
    with_torch = pneumo("predict", *files, "--format", "csv").stdout
    rows = [line.split(",") for line in light.stdout.splitlines()[1:]]
    reference = [line.split(",") for line in with_torch.splitlines()[1:]]
    assert [r[0] for r in rows] == [r[0] for r in reference] == [str(f) for f in files]
    for r, ref in zip(rows, reference):
        assert float(r[1]) == pytest.approx(float(ref[1]), abs=1e-4) and r[2] == ref[2]
    training = _without_training_extras("train", "--config", "cpu", "--out", "unused")
    assert training.returncode == 2 and "Traceback" not in training.stderr
    assert "pip install 'pneumo[train]'" in " ".join(training.stderr.split())


def test_a_bad_file_in_a_folder_is_skipped_and_counted_unless_strict(small_folder: Path, tmp_path: Path) -> None:
    for f in sorted((small_folder / "PNEUMONIA").glob("*.jpeg"))[:2]:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.jpeg").write_bytes(b"\xff\xd8\xff garbage")
    proc = pneumo("predict", tmp_path, "--format", "json")
    assert len(json.loads(proc.stdout)) == 2  # stdout stays valid JSON
    assert "skipped 1 of 3 files" in proc.stderr and "broken.jpeg" in proc.stderr
    assert_user_error(pneumo("predict", tmp_path, "--strict", check=False), "broken.jpeg", "--strict")


# --- outputs that cannot be written: refused before any work, one line, exit 2, nothing touched ---


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "{image}", "--format", "json", "--out", "/dev/null"], "--out /dev/null is a device, not a regular file"),
        (["predict", "{image}", "--out", "{folder}"], "is a folder, not a file: give a file path"),
        (["predict", "{image}", "--cam", "{file}"], "--cam {file} is a file, not a folder"),
        (["predict", "{image}", "--out", "{file}/p.json"], "cannot write --out {file}/p.json: {file} is a file, not a folder"),
        (["evaluate", "{data}", "--json", "{folder}"], "--json {folder} is a folder, not a file"),
        (["evaluate", "{data}", "--plots", "{file}"], "--plots {file} is a file, not a folder"),
        (["export", "--out", "/dev/null"], "--out /dev/null is a device, not a regular file"),
        (["train", "--config", "seed", "--out", "/dev/null"], "--out /dev/null is a device, not a folder"),
        (["train", "--config", "seed", "--out", "{file}"], "--out {file} is a file, not a folder"),
        (["predict-archive", "{data}", "--out", "{folder}"], "--out {folder} is a folder, not a file"),
        (["calibrate", "{data}", "--out", "/dev/null"], "--out /dev/null is a device, not a folder"),
        (["data", "preview", "{data}", "--out", "{folder}"], "--out {folder} is a folder, not a file"),
        (["data", "download", "--to", "{file}"], "--to {file} is a file, not a folder"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_an_output_that_cannot_be_written_is_refused_up_front(small_folder: Path, tmp_path: Path, args: list[str], message: str) -> None:
    where = {
        "image": str(min((small_folder / "NORMAL").glob("*.jpeg"))),
        "data": str(small_folder),
        "folder": str(tmp_path / "dir.json"),
        "file": str(tmp_path / "plain"),
    }
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "plain").write_text("keep")
    started = time.monotonic()
    proc = pneumo(*[a.format(**where) for a in args], check=False)
    assert_user_error(proc, message.format(**where))
    assert len(proc.stderr.strip().splitlines()) <= 2  # one line, which Rich may wrap once
    assert time.monotonic() - started < 60  # refused before loading a model or decoding images (a loose bound on a busy machine)
    assert (tmp_path / "plain").read_text() == "keep" and list((tmp_path / "dir.json").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "plain"]
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_cache_path_that_is_a_file_is_a_clear_error(small_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("not a folder")
    env = {**os.environ, "COLUMNS": "200", "PNEUMO_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "pneumo", "train", "--config", "seed", "--set", f"data={small_folder}", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert_user_error(proc, "the image cache", "($PNEUMO_CACHE) is not usable", "is a file, not a folder")
    assert (tmp_path / "cache").read_text() == "not a folder"


def test_overwrite_refuses_a_project_root_that_holds_a_config_yaml(small_folder: Path, tmp_path: Path) -> None:
    import yaml

    from pneumo.config import config_to_dict, load_config

    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('mine')")
    (root / "config.yaml").write_text(yaml.safe_dump(config_to_dict(load_config("seed"))))  # even a pneumo config
    proc = pneumo("train", "--config", "seed", "--set", f"data={small_folder}", "--out", root, "--overwrite", check=False)
    assert_user_error(proc, f"{root} holds src/, which a pneumo run folder never has; refusing to delete it")
    assert (root / "src" / "main.py").read_text() == "print('mine')" and (root / "config.yaml").exists()


_FAILING_DISK = (
    "import sys, errno\n"
    "import pneumo.models.checkpoint as checkpoint\n"
    "from safetensors import SafetensorError\n"
    "real, calls = checkpoint.save_file, []\n"
    "def save_file(*args, **kwargs):\n"
    "    calls.append(1)\n"
    "    if len(calls) == 2:  # epoch 2's checkpoint: the disk is full now, as safetensors reports it\n"
    "        raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')\n"
    "    return real(*args, **kwargs)\n"
    "checkpoint.save_file = save_file\n"
    "sys.argv = ['pneumo', *sys.argv[1:]]\n"
    "from pneumo.cli import main\n"
    "main()\n"
)


def test_a_full_disk_during_training_is_exit_2_and_the_run_resumes(small_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "seed",
        "--set",
        f"data={small_folder}",
        "--set",
        "image_size=64",
        "--set",
        "epochs=2",
        "--set",
        "limit=40",
        "--out",
        str(run),
        "--quiet",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _FAILING_DISK, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=600,
        check=False,
    )
    assert_user_error(proc, "checkpoints/last", "No space left on device")
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]  # no temporary file left
    orphan = run / "checkpoints" / "last" / ".weights.safetensors.abcd1234.tmp"  # as a kill -9 mid-write leaves one
    orphan.write_bytes(b"w" * 78_000)
    resumed = pneumo("train", "--resume", run)  # not --quiet: that leaves out the progress lines these are
    assert "removed 1 temporary file (78.0 kB)" in resumed.stderr and "resuming after epoch 1 of 2" in resumed.stderr
    assert not orphan.exists() and (run / "val_report.json").exists()


def test_the_conventions_a_user_brings(small_folder: Path) -> None:
    """--version, help that says what to type (not Python types), and a table that names the model and threshold."""
    assert pneumo("--version").stdout.strip() == f"pneumo {pneumo_package.__version__}"
    for command in (["--help"], ["train", "--help"], ["predict", "--help"], ["export", "--help"], ["data", "summary", "--help"]):
        shown = pneumo(*command).stdout
        assert not [label for label in ("<bool>", "<str>", "<path>", "list[", "<int>") if label in shown], shown
    assert "--install-completion" in pneumo("--help").stdout
    film = sorted((small_folder / "NORMAL").glob("*.jpeg"))[0]
    table = pneumo("predict", film).stdout
    assert f"bundled model, threshold {pneumo_package.load_model().threshold:.3g}" in table and film.name in table


def test_unknown_keys_suggest_the_nearest_and_errors_stay_on_one_line(small_folder: Path) -> None:
    args = ["train", "--config", "cpu", "--set", "epoch=3", "--out", "/tmp/never"]
    done = subprocess.run(
        [sys.executable, "-m", "pneumo", *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}, timeout=120
    )
    assert done.returncode == 2 and "did you mean 'epochs'?" in done.stderr and len(done.stderr) > 120
    assert done.stderr.count("\n") == 1  # one line, however long: not wrapped at the terminal's width


def test_the_librarys_log_is_plain_lines_on_stderr_and_quiet_leaves_the_warnings(capsys: pytest.CaptureFixture) -> None:
    """What `main` sets up once: the `pneumo` logger's lines as the command line printed them before logging, one each on stderr."""
    from pneumo import cli

    parent = logging.getLogger("pneumo")
    level, propagate = parent.level, parent.propagate
    try:
        cli._show_log()
        cli._show_log()  # once, however often
        logging.getLogger("pneumo.training.loop").info("epoch   1/1  loss %.4f [not markup]", 0.5)
        logging.getLogger("pneumo.training.tracking").warning("MLflow stopped recording")
        cli._quiet_log(True)
        logging.getLogger("pneumo.data.download").info("verifying data.zip")
        logging.getLogger("pneumo.data.download").warning("still shown")
    finally:
        cli._quiet_log(False)
        parent.removeHandler(cli._log_lines)
        parent.setLevel(level)
        parent.propagate = propagate
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.splitlines() == [
        "epoch   1/1  loss 0.5000 [not markup]",
        "warning: MLflow stopped recording",
        "warning: still shown",
    ]


@pytest.mark.slow  # whole commands in new processes
def test_models_lists_the_architectures_and_upgrade_is_beside_it() -> None:
    shown = pneumo("models").stdout
    assert all(name in shown for name in ("seed_cnn", "resnet18_half", "densenet121"))
    assert "upgrade" in pneumo("models", "--help").stdout


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("args", [["predict", "FILM"], ["predict", "FILM", "--json"], ["models"]], ids=["table", "json", "models"])
def test_an_output_that_cannot_be_written_is_one_line(small_folder: Path, args: list[str]) -> None:
    """stdout on /dev/full (a full disk): `error: cannot write the output: No space left on device`, exit 2, no traceback."""
    film = sorted((small_folder / "NORMAL").glob("*.jpeg"))[0]
    command = [sys.executable, "-m", "pneumo", *(str(film) if a == "FILM" else a for a in args)]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.strip() == "error: cannot write the output: No space left on device"


def test_a_terminal_that_cannot_show_a_name_gets_it_escaped(small_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dossier-é"
    folder.mkdir()
    shutil.copy(sorted((small_folder / "NORMAL").glob("*.jpeg"))[0], folder / "film-ñ.jpeg")
    env = {**os.environ, "LC_ALL": "C", "PYTHONIOENCODING": "ascii"}
    proc = subprocess.run([sys.executable, "-m", "pneumo", "predict", str(folder)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "film-\\xf1.jpeg" in proc.stdout and "NORMAL" in proc.stdout


def test_a_deleted_working_folder_is_said_before_anything_loads(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    code = f"import os, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); sys.argv = ['pneumo', 'train', '--config', 'cpu']; from pneumo.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "error: the current folder no longer exists (deleted or unmounted): cd to a folder that does"
    )
