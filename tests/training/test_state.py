"""The training state saved at each epoch's end: a faithful round trip, and writes that never break it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError
from torch.optim.swa_utils import AveragedModel

from pneumo.config import config_to_dict, load_config
from pneumo.errors import PneumoError
from pneumo.inference.torch_backend import load_checkpoint
from pneumo.models import create_model
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CheckpointMeta
from pneumo.training.optim import ema_update
from pneumo.training.run_dir import complete_best_copy, open_run, prepare_run_dir
from pneumo.training.state import STATE, RunSoFar, TrainingParts, load_train_state, save_train_state, saved_epoch

FINGERPRINT = "f" * 32


def _net(width: int = 4) -> torch.nn.Module:
    """A tiny network with what matters here: convolutions, BatchNorm buffers, dropout."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3),
        torch.nn.BatchNorm2d(width),
        torch.nn.ReLU(),
        torch.nn.Conv2d(width, width, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(width, 1),
    )


def _parts(seed: int = 0) -> TrainingParts:
    """A small version of the training loop's objects: channels-last network, AdamW, schedule, EMA, generators."""
    torch.manual_seed(seed)
    model = _net().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (1 + s))
    ema = AveragedModel(model, multi_avg_fn=ema_update(0.9), use_buffers=True)
    generators = {"batches": torch.Generator().manual_seed(seed), "augment": torch.Generator().manual_seed(seed + 1)}
    return TrainingParts(model, optimizer, scheduler, ema, generators)


def _steps(parts: TrainingParts, n: int) -> list[torch.Tensor]:
    """Train n steps drawing from every generator (dropout uses the global one); returns the losses."""
    losses = []
    for _ in range(n):
        x = torch.rand(4, 1, 12, 12, generator=parts.generators["augment"]).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (4,), generator=parts.generators["batches"]).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(parts.model(x)[:, 0], y)
        parts.optimizer.zero_grad()
        loss.backward()
        parts.optimizer.step()
        parts.scheduler.step()
        parts.ema.update_parameters(parts.model)
        losses.append(loss.detach())
    return losses


def _all_tensors(parts: TrainingParts) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in parts.model.state_dict().items()} | {f"ema.{k}": v for k, v in parts.ema.state_dict().items()}
    for i, per_param in parts.optimizer.state_dict()["state"].items():
        state |= {f"opt.{i}.{k}": v for k, v in per_param.items()}
    return {k: v.clone() for k, v in state.items()}  # a snapshot: training goes on in place


def _saved(folder: Path, epoch: int = 1) -> TrainingParts:
    parts = _parts()
    _steps(parts, 2)
    save_train_state(folder, parts, RunSoFar(epoch, [{"epoch": 1.0, "val_loss": 0.5, "seconds": 1.0}], 0.9, 1), FINGERPRINT)
    return parts


def test_a_restored_state_continues_exactly_as_the_original(tmp_path: Path) -> None:
    original = _saved(tmp_path)
    expected = _steps(original, 3)

    restored = _parts(seed=7)  # other weights, other generators: everything must come from the file
    so_far = load_train_state(tmp_path, restored, FINGERPRINT)
    assert so_far == RunSoFar(1, [{"epoch": 1.0, "val_loss": 0.5, "seconds": 1.0}], 0.9, 1)
    assert torch.equal(torch.stack(_steps(restored, 3)), torch.stack(expected))
    a, b = _all_tensors(original), _all_tensors(restored)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert restored.scheduler.state_dict() == original.scheduler.state_dict()
    assert restored.optimizer.param_groups[0]["lr"] == original.optimizer.param_groups[0]["lr"]
    # per-parameter moments keep their parameter's channels-last layout, as in a fresh run
    for param, state in restored.optimizer.state.items():
        assert state["exp_avg"].stride() == param.stride()


def test_state_is_safetensors_and_json_never_pickle(tmp_path: Path) -> None:
    _saved(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[1] == STATE and names[0].startswith("state-0001-") and names[0].endswith(".safetensors")
    assert not (tmp_path / names[0]).read_bytes().startswith(b"\x80")  # pickle protocol header
    record = json.loads((tmp_path / STATE).read_text())
    assert record["epoch"] == 1 and record["tensors"] == names[0] and len(record["tensors_sha256"]) == 64
    assert saved_epoch(tmp_path) == 1
    assert oct((tmp_path / names[0]).stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_a_new_epoch_replaces_the_previous_state(tmp_path: Path) -> None:
    parts = _saved(tmp_path)
    _steps(parts, 1)
    save_train_state(tmp_path, parts, RunSoFar(2), FINGERPRINT)
    assert saved_epoch(tmp_path) == 2
    assert [p.name[:11] for p in tmp_path.glob("state-*")] == ["state-0002-"]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _fail_nth_replace(n: int):  # noqa: ANN202
    real, calls = os.replace, []

    def replace(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == n:
            _disk_full()
        real(src, dst)

    return replace


@pytest.mark.parametrize(
    "failing",
    ["writing-tensors", "renaming-tensors", "renaming-state-json"],  # the last is the commit itself
)
def test_a_failed_write_leaves_the_previous_state_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    parts = _saved(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    expected = _all_tensors(parts)
    _steps(parts, 1)
    if failing == "writing-tensors":
        monkeypatch.setattr("pneumo.training.state.save_file", _disk_full)
    else:
        monkeypatch.setattr("os.replace", _fail_nth_replace(1 if failing == "renaming-tensors" else 2))
    with pytest.raises(
        PneumoError, match=r"could not save the training state of epoch 2 .*No space left on device.*state saved before it is intact"
    ):
        save_train_state(tmp_path, parts, RunSoFar(2), FINGERPRINT)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no half-written or orphaned files
    restored = _parts(seed=3)
    assert load_train_state(tmp_path, restored, FINGERPRINT).epoch == 1
    after = _all_tensors(restored)
    assert all(torch.equal(expected[k], after[k]) for k in expected)


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = create_model("seed_cnn", image_size=32)
    meta = {
        "architecture": "seed_cnn",
        "task": "binary",
        "classes": ["NORMAL", "PNEUMONIA"],
        "num_outputs": 1,
        "image_size": 32,
        "mean": 0.0,
        "std": 1.0,
        "threshold": 0.5,
    }
    folder = save_checkpoint(tmp_path / "last", net, CheckpointMeta(**meta, epoch=1))
    before = {name: (folder / name).read_bytes() for name in ("weights.safetensors", "meta.json")}
    monkeypatch.setattr("pneumo.models.checkpoint.save_file", _disk_full)
    with pytest.raises(PneumoError, match=r"checkpoint.*No space left on device|weights\.safetensors \(No space left on device\)"):
        save_checkpoint(folder, create_model("seed_cnn", image_size=32), CheckpointMeta(**meta, epoch=2))
    monkeypatch.undo()
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "weights.safetensors"]  # no temporary files left
    assert load_checkpoint(folder).meta.epoch == 1


def test_a_state_that_does_not_hold_together_is_refused(tmp_path: Path) -> None:
    _saved(tmp_path)
    record = json.loads((tmp_path / STATE).read_text())
    tensors = tmp_path / record["tensors"]

    data = bytearray(tensors.read_bytes())
    data[-10] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(PneumoError, match="damaged: .* does not match the checksum"):
        load_train_state(tmp_path, _parts(), FINGERPRINT)

    (tmp_path / STATE).write_text(json.dumps({**record, "tensors": "state-0002-000000000000.safetensors"}))
    with pytest.raises(PneumoError, match="names state-0002-000000000000.safetensors, which is missing"):
        load_train_state(tmp_path, _parts(), FINGERPRINT)

    _saved(tmp_path)
    record = json.loads((tmp_path / STATE).read_text())
    (tmp_path / STATE).write_text(json.dumps({**record, "epoch": 2}))  # a state.json of another epoch
    with pytest.raises(PneumoError, match="holds epoch 1 but state.json says epoch 2"):
        load_train_state(tmp_path, _parts(), FINGERPRINT)

    _saved(tmp_path)
    with pytest.raises(PneumoError, match="images found now differ"):
        load_train_state(tmp_path, _parts(), "0" * 32)
    other = _parts()
    other.model = _net(width=8)  # another recipe's network
    with pytest.raises(PneumoError, match="does not fit this model"):
        load_train_state(tmp_path, other, FINGERPRINT)

    (tmp_path / STATE).unlink()
    with pytest.raises(PneumoError, match="holds no training state"):
        load_train_state(tmp_path, _parts(), FINGERPRINT)


def test_a_stop_before_copying_a_new_best_is_completed(tmp_path: Path) -> None:
    net = create_model("seed_cnn", image_size=32)
    meta = {
        "architecture": "seed_cnn",
        "task": "binary",
        "classes": ["NORMAL", "PNEUMONIA"],
        "num_outputs": 1,
        "image_size": 32,
        "mean": 0.0,
        "std": 1.0,
        "threshold": 0.5,
    }
    save_checkpoint(tmp_path / "best", net, CheckpointMeta(**meta, epoch=1))
    save_checkpoint(tmp_path / "last", net, CheckpointMeta(**meta, epoch=2))
    complete_best_copy(tmp_path, RunSoFar(epoch=2, best_epoch=1))  # best/ is right: nothing to do
    assert load_checkpoint(tmp_path / "best").meta.epoch == 1
    complete_best_copy(tmp_path, RunSoFar(epoch=2, best_epoch=2))  # the state says 2 was best; the copy never happened
    assert load_checkpoint(tmp_path / "best").meta.epoch == 2
    with pytest.raises(PneumoError, match="neither best/ nor last/ holds epoch 3"):
        complete_best_copy(tmp_path, RunSoFar(epoch=3, best_epoch=3))


# --- the disk failing for real (safetensors' own error), read-only run folders, --overwrite, leftovers ---

ROOT = os.geteuid() == 0


def _safetensors_disk_full(*args: object, **kwargs: object) -> None:
    """What safetensors' save_file raises on a full disk: not an OSError, the errno only in its text."""
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_safetensors_own_disk_full_error_keeps_the_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _saved(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _steps(parts, 1)
    monkeypatch.setattr("pneumo.training.state.save_file", _safetensors_disk_full)
    with pytest.raises(
        PneumoError, match=r"could not save the training state of epoch 2 .*No space left on device.*state saved before it is intact"
    ) as err:
        save_train_state(tmp_path, parts, RunSoFar(2), FINGERPRINT)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no 0-byte temporary file left
    assert load_train_state(tmp_path, _parts(seed=3), FINGERPRINT).epoch == 1


def test_safetensors_own_disk_full_error_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = create_model("seed_cnn", image_size=32)
    meta = {
        "architecture": "seed_cnn",
        "task": "binary",
        "classes": ["NORMAL", "PNEUMONIA"],
        "num_outputs": 1,
        "image_size": 32,
        "mean": 0.0,
        "std": 1.0,
        "threshold": 0.5,
    }
    folder = save_checkpoint(tmp_path / "last", net, CheckpointMeta(**meta, epoch=1))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr("pneumo.models.checkpoint.save_file", _safetensors_disk_full)
    with pytest.raises(PneumoError, match=r"No space left on device") as err:  # was a SafetensorError traceback
        save_checkpoint(folder, create_model("seed_cnn", image_size=32), CheckpointMeta(**meta, epoch=2))
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert load_checkpoint(folder).meta.epoch == 1


@pytest.mark.skipif(ROOT, reason="root writes into a read-only folder anyway; the disk-full variants cover the same path")
def test_a_read_only_folder_keeps_the_previous_state(tmp_path: Path) -> None:
    parts = _saved(tmp_path / "last")
    before = {p.name: p.read_bytes() for p in (tmp_path / "last").iterdir()}
    (tmp_path / "last").chmod(0o555)
    try:
        with pytest.raises(PneumoError, match=r"could not save the training state of epoch 2 .*not writable \(Permission denied\)"):
            save_train_state(tmp_path / "last", parts, RunSoFar(2), FINGERPRINT)
    finally:
        (tmp_path / "last").chmod(0o755)
    assert {p.name: p.read_bytes() for p in (tmp_path / "last").iterdir()} == before


def _pneumo_config(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config_to_dict(load_config("seed")), sort_keys=False))


def _fake_run(folder: Path) -> Path:
    """A run folder as pneumo leaves it, every kind of file it writes (contents do not matter here)."""
    _pneumo_config(folder)
    for name in ("split.csv", "history.csv", "history.png", "roc.png", "confusion.png", "reliability.png", "val_report.json", ".DS_Store"):
        (folder / name).write_bytes(b"x" * 100)
    for sub, names in {
        "checkpoints/last": (
            "weights.safetensors",
            "meta.json",
            "state.json",
            "state-0002-0123456789ab.safetensors",
            ".meta.json.abcd1234.tmp",
        ),
        "checkpoints/best": ("weights.safetensors", "meta.json"),
        "model": ("weights.safetensors", "meta.json", "features.safetensors", "training_films.json", ".tmpAb12Cd"),
    }.items():
        (folder / sub).mkdir(parents=True)
        for name in names:
            (folder / sub / name).write_bytes(b"w" * 1000)
    return folder


def test_overwrite_removes_a_previous_run_and_says_so(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    run = _fake_run(tmp_path / "run")
    size = 8 * 100 + 12 * 1000 + (run / "config.yaml").stat().st_size
    assert prepare_run_dir(run, overwrite=True) == run
    assert pneumo_log.messages == [f"removing the previous run in {run} (21 files, {size / 1000:.1f} kB)"]
    assert run.is_dir() and list(run.iterdir()) == []


def test_overwrite_removes_a_previous_model_folder(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "ensemble"
    model.mkdir()
    (model / "meta.json").write_text(json.dumps({"format_version": 1, "architecture": "ensemble", "weights_sha256": "0" * 64}))
    for name in (
        "weights.safetensors",
        "features.safetensors",
        "training_films.json",
        "val_report.json",
        "site_calibration.json",
        "roc.png",
    ):
        (model / name).write_bytes(b"m" * 10)
    prepare_run_dir(model, overwrite=True)
    assert pneumo_log.messages[0].startswith(f"removing the previous model in {model} (7 files,") and list(model.iterdir()) == []


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (None if p.is_dir() or p.is_symlink() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("project root", r"holds src/, which a pneumo run folder never has; refusing to delete it"),
        ("a foreign config.yaml", r"holds a config\.yaml that is not a pneumo run's config; refusing to overwrite it"),
        ("no config.yaml", r"does not look like a pneumo run folder .*refusing to overwrite it"),
        ("a note in a run", r"holds notes\.txt, which a pneumo run folder never has"),
        ("a symlink in a run", r"holds model/data, a symlink, which a pneumo run folder never has"),
        ("a run in a model folder", r"holds checkpoints/, which a pneumo model folder never has"),
    ],
)
def test_overwrite_deletes_nothing_that_is_not_recognisably_pneumos(tmp_path: Path, setup: str, message: str) -> None:
    folder, precious = tmp_path / "target", tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    if setup == "project root":  # the case: a config.yaml beside src/
        _pneumo_config(folder)
        (folder / "src").mkdir()
        (folder / "src" / "main.py").write_text("print('mine')")
    elif setup == "a foreign config.yaml":
        folder.mkdir()
        (folder / "config.yaml").write_text("name: my-project\nversion: 2\n")
        (folder / "README.md").write_text("mine")
    elif setup == "no config.yaml":
        folder.mkdir()
        (folder / "thesis.tex").write_text("mine")
    elif setup == "a note in a run":
        _fake_run(folder)
        (folder / "notes.txt").write_text("mine")
    elif setup == "a symlink in a run":
        _fake_run(folder)
        (folder / "model" / "data").symlink_to(precious, target_is_directory=True)
    else:
        _fake_run(folder)
        (folder / "config.yaml").unlink()
        (folder / "meta.json").write_text(json.dumps({"format_version": 1, "architecture": "resnet18", "weights_sha256": "0" * 64}))
    before = _snapshot(folder)
    with pytest.raises(PneumoError, match=message) as err:
        prepare_run_dir(folder, overwrite=True)
    assert "\n" not in str(err.value)
    assert _snapshot(folder) == before and (precious / "data.txt").read_text() == "keep me"


def test_a_run_folder_that_is_a_file_or_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(PneumoError, match=r"^--out /dev/null is a device, not a folder: give a folder to write into$"):
        prepare_run_dir("/dev/null", overwrite=True)
    with pytest.raises(PneumoError, match=r"--out .*plain is a file, not a folder"):
        prepare_run_dir(tmp_path / "plain", overwrite=False)
    with pytest.raises(PneumoError, match=r"plain is a file, not a folder"):
        prepare_run_dir(tmp_path / "plain" / "run", overwrite=False)
    assert (tmp_path / "plain").read_text() == "x"


def test_a_resumed_run_is_cleared_of_leftover_temporary_files(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    _pneumo_config(run)
    (run / "checkpoints" / "last").mkdir(parents=True)
    (run / "checkpoints" / "last" / ".weights.safetensors.abcd1234.tmp").write_bytes(b"w" * 78_000)
    (run / ".history.csv.efgh5678.tmp").write_bytes(b"")  # the 0-byte one a failed write used to leave
    (run / "history.csv").write_text("epoch\n")
    open_run(None, run, overwrite=False, resume=True)
    assert pneumo_log.messages == [f"removed 2 temporary files (78.0 kB) that interrupted writes left in {run}"]
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["checkpoints", "checkpoints/last", "config.yaml", "history.csv"]


@pytest.mark.skipif(ROOT, reason="root writes into a read-only folder anyway")
def test_a_read_only_run_folder_is_refused_before_resuming(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _pneumo_config(run)
    run.chmod(0o555)
    try:
        with pytest.raises(PneumoError, match=r"cannot write into the run folder .*run is not writable \(Permission denied\)"):
            open_run(None, run, overwrite=False, resume=True)
    finally:
        run.chmod(0o755)
