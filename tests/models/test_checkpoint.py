from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.errors import PneumoError
from pneumo.inference.predict import bundled_model_dir
from pneumo.inference.torch_backend import load_checkpoint
from pneumo.models import create_model
from pneumo.models.checkpoint import copy_checkpoint, read_meta, resolve_checkpoint, save_checkpoint, upgrade_checkpoint, write_meta
from pneumo.models.meta import CHECKSUM, FEATURES, CheckpointMeta, seal
from pneumo.utils.hashing import sha256_file
from tests.conftest import BUNDLED_SIZE


def _meta(**extra: object) -> CheckpointMeta:
    return CheckpointMeta(
        **{
            "architecture": "seed_cnn",
            "task": "binary",
            "classes": ["NORMAL", "PNEUMONIA"],
            "num_outputs": 1,
            "image_size": 64,
            "mean": 0.0,
            "std": 1.0,
            "threshold": 0.4,
            **extra,
        }
    )


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(1)
    net = create_model("seed_cnn", image_size=64).eval()
    return save_checkpoint(tmp_path / "ckpt", net, _meta()), net


def test_round_trip_gives_identical_predictions(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, net = saved
    loaded = load_checkpoint(folder)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    with torch.no_grad():
        expected = torch.sigmoid(net(torch.from_numpy(images).float().div(255).unsqueeze(1)))[:, 0].numpy()
    assert np.allclose(loaded.pneumonia_probability(images), expected, atol=1e-6)
    assert loaded.threshold == 0.4 and loaded.image_size == 64
    assert json.loads((folder / "meta.json").read_text())["format_version"] == 2


def test_checkpoint_files_are_safetensors_not_pickles(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "weights.safetensors"]
    assert not (folder / "weights.safetensors").read_bytes().startswith(b"\x80")  # pickle protocol header


def test_damaged_weights_are_detected(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (folder / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(PneumoError, match="checksum.*damaged"):
        load_checkpoint(folder)


def _edit(folder: Path, reseal: bool = False, drop: tuple[str, ...] = (), **changes: object) -> None:
    """Edit a folder's meta.json as a person would (the checksum left as it was), or as a forger (`reseal`)."""
    values = json.loads((folder / "meta.json").read_text())
    values.update(changes)
    for name in drop:
        values.pop(name)
    (folder / "meta.json").write_text(json.dumps(seal(values) if reseal else values))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architecture": "vgg99"}, "unknown model 'vgg99'"),
        ({"format_version": 99}, "format 99 is not supported"),
        ({"image_size": 180}, r"does not fit a seed_cnn binary model \(1 output\(s\), 180 px\)"),
        ({"threshold": None, "_drop": "threshold"}, "lacks threshold"),
    ],
)
def test_bad_metadata_is_a_clear_error_even_with_a_recomputed_checksum(
    saved: tuple[Path, torch.nn.Module], change: dict, message: str
) -> None:
    folder, _ = saved
    drop = change.pop("_drop", None)
    changes = {k: v for k, v in change.items() if k != drop}
    _edit(folder, reseal=True, drop=(drop,) if drop else (), **changes)
    with pytest.raises(PneumoError, match=message):
        load_checkpoint(folder)


@pytest.fixture()
def bundled_copy(tmp_path: Path) -> Path:
    """The shipped model folder, copied (weights, metadata, input check)."""
    return copy_checkpoint(bundled_model_dir(), tmp_path / "bundled")


def test_the_untouched_bundled_model_loads_and_predicts(bundled_copy: Path) -> None:
    model = load_checkpoint(bundled_copy)
    assert model.meta.meta_sha256 and model.meta.features_sha256 == sha256_file(bundled_copy / FEATURES)
    p = model.pneumonia_probability(np.full((1, BUNDLED_SIZE, BUNDLED_SIZE), 128, dtype=np.uint8))
    assert p.shape == (1,) and np.isfinite(p).all()
    assert model.with_feature_check().feature_check is not None


EDITED = (
    "meta.json was edited or damaged: its fields no longer match their checksum \\(meta_sha256\\); a model folder must be written by pneumo"
)


@pytest.mark.parametrize(
    "changes, drop, message",
    [
        ({"threshold": 2.0}, (), EDITED),
        ({"threshold": float("nan")}, (), EDITED),
        ({"threshold": -1}, (), EDITED),
        ({"threshold": "0.5"}, (), EDITED),
        ({"threshold": True}, (), EDITED),
        ({"threshold": 0.5}, (), EDITED),  # in range, and still not silently used
        ({"task": "pathogen"}, (), EDITED),
        ({"classes": ["PNEUMONIA", "NORMAL"]}, (), EDITED),
        ({"std": 0}, (), EDITED),
        ({"std": -1.0}, (), EDITED),
        ({"std": float("nan")}, (), EDITED),
        ({"temperature": 5.0}, (), EDITED),
        ({}, ("weights_sha256",), EDITED),
        ({}, ("meta_sha256",), "has no metadata checksum \\(meta_sha256\\)"),
        ({}, ("features_sha256",), EDITED),
        ({"format_version": 1}, ("meta_sha256",), "checkpoint format 1.*pneumo models upgrade FOLDER"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_an_edited_bundled_meta_json_is_refused(bundled_copy: Path, changes: dict, drop: tuple, message: str) -> None:
    _edit(bundled_copy, drop=drop, **changes)
    with pytest.raises(PneumoError, match=message):
        load_checkpoint(bundled_copy)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"threshold": 2.0}, r"threshold 2\.0 is not a probability in \[0, 1\]"),
        (
            {"task": "pathogen", "classes": ["normal", "bacteria", "virus"], "num_outputs": 3},
            r"ensemble member 1: num_outputs 1 does not fit the pathogen task|does not fit a \w+ pathogen model \(3 output",
        ),
        ({"std": 0}, "std 0.0 is not positive"),
        ({"weights_sha256": ""}, r"no weights checksum \(weights_sha256\)"),
        ({"features_sha256": "0" * 64}, "features.safetensors does not match the checksum"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_a_forged_checksum_still_meets_the_field_checks(bundled_copy: Path, changes: dict, message: str) -> None:
    _edit(bundled_copy, reseal=True, **changes)
    with pytest.raises(PneumoError, match=message):
        load_checkpoint(bundled_copy)


def test_foreign_weights_are_refused(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    folder, _ = saved
    other = save_checkpoint(
        tmp_path / "other",
        create_model("seed_cnn", num_outputs=3, image_size=64),
        _meta(task="pathogen", classes=["normal", "bacteria", "virus"], num_outputs=3),
    )
    shutil.copy(other / "weights.safetensors", folder / "weights.safetensors")
    with pytest.raises(PneumoError, match="weights.safetensors does not match the checksum in meta.json"):
        load_checkpoint(folder)
    _edit(folder, weights_sha256=sha256_file(folder / "weights.safetensors"))  # the weights' checksum recomputed, not the metadata's
    with pytest.raises(PneumoError, match="meta.json was edited or damaged"):
        load_checkpoint(folder)
    _edit(folder, reseal=True)  # both recomputed: the weights still do not fit the network the metadata describes
    with pytest.raises(PneumoError, match=r"does not fit a seed_cnn binary model.*is \[3, 64\] in the file, \[1, 64\] in the model"):
        load_checkpoint(folder)


def test_non_finite_weights_are_never_written_nor_loaded(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder, net = saved
    broken = create_model("seed_cnn", image_size=64)
    with torch.no_grad():
        broken.classifier[-1].bias.fill_(float("nan"))
    with pytest.raises(PneumoError, match=r"non-finite numbers \(NaN or inf\) in classifier.4.bias; nothing was written"):
        save_checkpoint(tmp_path / "nan", broken, _meta())
    state = load_file(str(folder / "weights.safetensors"))
    state["classifier.4.bias"] = torch.full_like(state["classifier.4.bias"], float("inf"))
    save_file(state, str(folder / "weights.safetensors"))
    _edit(folder, reseal=True, weights_sha256=sha256_file(folder / "weights.safetensors"))  # checksums made to match
    with pytest.raises(
        PneumoError, match=r"weights.safetensors holds non-finite numbers \(NaN or inf\) in classifier.4.bias: the model is damaged"
    ):
        load_checkpoint(folder)


def test_a_replaced_or_missing_input_check_is_refused(bundled_copy: Path, saved: tuple[Path, torch.nn.Module]) -> None:
    data = bytearray((bundled_copy / FEATURES).read_bytes())
    data[-3] ^= 0x01
    (bundled_copy / FEATURES).write_bytes(bytes(data))
    with pytest.raises(PneumoError, match="features.safetensors does not match the checksum in meta.json"):
        load_checkpoint(bundled_copy)
    (bundled_copy / FEATURES).unlink()
    with pytest.raises(PneumoError, match="features.safetensors, the input check meta.json records, is missing"):
        load_checkpoint(bundled_copy)


def test_write_meta_is_how_metadata_changes(bundled_copy: Path) -> None:
    """calibrate and ensemble write metadata through write_meta, which validates and seals it."""
    write_meta(bundled_copy, read_meta(bundled_copy).replace(threshold=0.3, threshold_method="site"))
    assert load_checkpoint(bundled_copy).threshold == 0.3
    before = (bundled_copy / "meta.json").read_bytes()
    for bad in ({"threshold": 2.0}, {"temperature": float("nan")}, {"std": 0.0}, {"classes": ["NORMAL", "PNEUMONIA", "X"]}):
        with pytest.raises(PneumoError, match="the metadata for"):
            write_meta(bundled_copy, read_meta(bundled_copy).replace(**bad))
    assert (bundled_copy / "meta.json").read_bytes() == before  # nothing written


def test_write_meta_refuses_an_input_check_of_other_weights(bundled_copy: Path, saved: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved
    shutil.copy(bundled_copy / FEATURES, folder / FEATURES)  # the bundled model's statistics beside other weights
    with pytest.raises(PneumoError, match="was fitted for other weights"):
        write_meta(folder, read_meta(folder).replace(threshold=0.3))


def test_save_checkpoint_validates_before_writing(tmp_path: Path) -> None:
    net = create_model("seed_cnn", image_size=64)
    for bad in (_meta(threshold=float("nan")), _meta(std=0.0), _meta(architecture="vgg99"), _meta(task="pathogen")):
        with pytest.raises(PneumoError, match="the metadata for"):
            save_checkpoint(tmp_path / "ckpt", net, bad)
    assert not (tmp_path / "ckpt").exists() or list((tmp_path / "ckpt").iterdir()) == []


def _old_format(folder: Path, **changes: object) -> None:
    """A folder as the first format wrote it: no metadata or input-check checksum."""
    _edit(folder, drop=(CHECKSUM, "features_sha256"), format_version=1, **changes)


def _upgrade_command(folder: Path) -> subprocess.CompletedProcess:
    """`pneumo models upgrade FOLDER`, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pneumo", "models", "upgrade", str(folder)], capture_output=True, text=True, timeout=300, check=False
    )


def test_an_old_format_folder_is_refused_until_upgraded(saved: tuple[Path, torch.nn.Module], capsys: pytest.CaptureFixture) -> None:
    folder, _ = saved
    _old_format(folder)
    with pytest.raises(PneumoError, match="checkpoint format 1, which has no metadata checksum"):
        load_checkpoint(folder)
    done = _upgrade_command(folder)
    assert done.returncode == 0 and "checked and saved in checkpoint format 2" in done.stdout
    assert load_checkpoint(folder).threshold == 0.4
    assert upgrade_checkpoint(folder) == folder  # a current folder is checked and left alone


@pytest.mark.parametrize(
    "changes, drop, message",
    [
        ({"threshold": 2.0}, (), r"threshold 2\.0 is not a probability"),
        ({"std": float("nan")}, (), "std is nan"),
        ({}, ("weights_sha256",), "has no weights checksum.*train the model again"),
        ({"weights_sha256": "0" * 64}, (), "weights.safetensors does not match the checksum"),
        ({"image_size": 96}, (), "does not fit a seed_cnn"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_upgrade_refuses_what_it_cannot_vouch_for(saved: tuple[Path, torch.nn.Module], changes: dict, drop: tuple, message: str) -> None:
    folder, _ = saved
    _old_format(folder, **changes)
    for name in drop:
        _edit(folder, drop=(name,))
    before = (folder / "meta.json").read_bytes()
    with pytest.raises(PneumoError, match=message):
        upgrade_checkpoint(folder)
    assert (folder / "meta.json").read_bytes() == before
    if "weights_sha256" in drop:  # the command once, as a user meets a refusal: one line, exit 2
        refused = _upgrade_command(folder)
        assert refused.returncode == 2 and refused.stderr.startswith("error:") and "Traceback" not in refused.stderr


def test_resolve_accepts_run_folder_checkpoint_folder_and_files(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    folder, _ = saved
    run = tmp_path / "run"
    shutil.copytree(folder, run / "model")
    assert resolve_checkpoint(run) == run / "model"
    assert resolve_checkpoint(folder / "meta.json") == folder
    with pytest.raises(PneumoError, match="not a pneumo checkpoint"):
        resolve_checkpoint(tmp_path)


def test_feature_statistics_follow_their_weights(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    """copy_checkpoint carries features.safetensors along; new weights in a folder drop the old statistics."""
    folder, net = saved
    (folder / FEATURES).write_bytes(b"statistics of these weights")  # not recorded in meta.json (save_checkpoint wrote it first)
    copied = copy_checkpoint(folder, tmp_path / "copy")
    assert (copied / FEATURES).read_bytes() == b"statistics of these weights"
    assert load_checkpoint(copied).folder == copied
    save_checkpoint(copied, net, _meta(threshold=0.3))
    assert not (copied / FEATURES).exists()
    copy_checkpoint(copied, folder)  # a source without statistics leaves none behind
    assert not (folder / FEATURES).exists() and load_checkpoint(folder).threshold == 0.3
