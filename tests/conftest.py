"""Shared fixtures: small real subsets of ../shared/data copied into temporary folders.

No test touches the network or a GPU; the decoded-image cache goes to a temporary folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
TRAIN = SHARED / "chest_xray" / "train"
SAMPLES = SHARED / "samples"
# the bundled model's input side, from its metadata (cheap: no model is loaded), for tests of it
BUNDLED_SIZE = int(json.loads((Path(__file__).resolve().parents[1] / "src" / "pneumo" / "weights" / "meta.json").read_text())["image_size"])


@pytest.fixture
def pneumo_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """pneumo's log lines, INFO and above, as the code under test logs them (`pneumo_log.messages`)."""
    caplog.set_level(logging.INFO, logger="pneumo")
    return caplog


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail, rather than hang the run, should the code inside block (on a FIFO, say): SIGALRM interrupts it."""

    def fail(*_: object) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def pick(label: str, n: int, offset: int = 0) -> list[Path]:
    """Every k-th file of a class folder, so the pick spans series, pathogens and patients.

    Without the shared data the test fails saying which folder is missing, not with an IndexError
    further on; call it inside tests and fixtures only, never at import time.
    """
    folder = TRAIN / label
    if not folder.is_dir():
        pytest.fail(f"test data not found: {folder} is missing; the tests read ../shared/data from the project root", pytrace=False)
    files = sorted(folder.glob("*.jpeg"))
    if not files:
        pytest.fail(
            f"test data not found: {folder} holds no *.jpeg films; the tests read ../shared/data from the project root", pytrace=False
        )
    step = max(1, len(files) // n)
    return files[offset::step][:n]


def copy_class_folders(root: Path, per_class: dict[str, int], offset: int = 0) -> Path:
    """root/NORMAL, root/PNEUMONIA with real images."""
    for label, n in per_class.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for f in pick(label, n, offset):
            shutil.copy(f, root / label / f.name)
    return root


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    import os

    os.environ["PNEUMO_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not TRAIN.is_dir():
        pytest.fail(f"test data not found at {SHARED}; the tests read ../shared/data from the project root")
    return SHARED


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A class-folder directory: 60 NORMAL and 60 PNEUMONIA real images."""
    return copy_class_folders(tmp_path_factory.mktemp("small") / "images", {"NORMAL": 60, "PNEUMONIA": 60})


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A Kaggle-style archive, nested as chest_xray/chest_xray/, with train/ and test/ and macOS junk."""
    top = tmp_path_factory.mktemp("kaggle") / "chest_xray"
    root = top / "chest_xray"
    copy_class_folders(root / "train", {"NORMAL": 80, "PNEUMONIA": 120})
    copy_class_folders(root / "test", {"NORMAL": 20, "PNEUMONIA": 30}, offset=3)
    (top / "__MACOSX" / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    (top / "__MACOSX" / "chest_xray" / "train" / "NORMAL" / "._IM-0115-0001.jpeg").write_bytes(b"\x00junk")
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\x00\x01")
    return top


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, kaggle_root: Path) -> Path:
    """One real (tiny) training run shared by the tests that need a trained model."""
    from pneumo.config import load_config
    from pneumo.training.loop import train

    cfg = load_config("cpu", [f"data={kaggle_root}", "image_size=64", "epochs=3", "batch_size=16", "model=resnet18", "threshold=youden"])
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(cfg, out=out, progress=False, n_boot=100)
    return out
