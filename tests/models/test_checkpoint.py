from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.errors import PneumoError
from pneumo.inference.torch_backend import load_checkpoint
from pneumo.models import create_model
from pneumo.models.checkpoint import resolve_checkpoint, save_checkpoint
from pneumo.models.meta import CheckpointMeta


def _meta(**extra: object) -> CheckpointMeta:
    return CheckpointMeta(**{
        "architecture": "seed_cnn", "task": "binary", "classes": ["NORMAL", "PNEUMONIA"], "num_outputs": 1,
        "image_size": 64, "mean": 0.0, "std": 1.0, "threshold": 0.4, **extra,
    })


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
    assert json.loads((folder / "meta.json").read_text())["format_version"] == 1


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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architecture": "vgg99"}, "unknown model 'vgg99'"),
        ({"format_version": 99}, "format 99 is not supported"),
        ({"image_size": 180}, "does not fit a seed_cnn"),
        ({"threshold": None, "_drop": "threshold"}, "lacks threshold"),
    ],
)
def test_bad_metadata_is_a_clear_error(saved: tuple[Path, torch.nn.Module], change: dict, message: str) -> None:
    folder, _ = saved
    meta = json.loads((folder / "meta.json").read_text())
    drop = change.pop("_drop", None)
    meta.update(change)
    if drop:
        meta.pop(drop)
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PneumoError, match=message):
        load_checkpoint(folder)


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
    from pneumo.models.checkpoint import copy_checkpoint
    from pneumo.models.meta import FEATURES

    folder, net = saved
    (folder / FEATURES).write_bytes(b"statistics of these weights")
    copied = copy_checkpoint(folder, tmp_path / "copy")
    assert (copied / FEATURES).read_bytes() == b"statistics of these weights"
    assert load_checkpoint(copied).folder == copied
    save_checkpoint(copied, net, _meta(threshold=0.3))
    assert not (copied / FEATURES).exists()
    copy_checkpoint(copied, folder)  # a source without statistics leaves none behind
    assert not (folder / FEATURES).exists() and load_checkpoint(folder).threshold == 0.3
