"""pneumo.data.kaggle: the Kaggle copy through a stand-in for kagglehub; nothing here reaches Kaggle."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Callable

import pytest

from pneumo.data.download import download
from pneumo.data.kaggle import KAGGLE_HANDLE
from pneumo.errors import PneumoError
from tests.data.conftest import quiet

pytestmark = pytest.mark.usefixtures("offline")


def _fake_kagglehub(monkeypatch: pytest.MonkeyPatch, credentials: Callable[[], object], fetch: Callable[..., str]) -> list[tuple[str, str]]:
    """A stand-in for kagglehub with its credential lookup and dataset_download(handle, output_dir=)."""
    calls: list[tuple[str, str]] = []
    hub = types.ModuleType("kagglehub")
    config = types.ModuleType("kagglehub.config")
    config.get_kaggle_credentials = credentials  # type: ignore[attr-defined]

    def dataset_download(handle: str, path: str | None = None, *, force_download: bool = False, output_dir: str | None = None) -> str:
        calls.append((handle, str(output_dir)))
        return fetch(handle, output_dir)

    hub.config = config  # type: ignore[attr-defined]
    hub.dataset_download = dataset_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kagglehub", hub)
    monkeypatch.setitem(sys.modules, "kagglehub.config", config)
    return calls


def test_kaggle_without_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # makes `import kagglehub` fail
    with pytest.raises(PneumoError, match="pip install kagglehub"):
        download(source="kaggle", to=tmp_path, **quiet())


def test_kaggle_without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_kagglehub(monkeypatch, lambda: None, lambda *_: pytest.fail("no download without a token"))
    with pytest.raises(PneumoError) as err:
        download(source="kaggle", to=tmp_path, **quiet())
    message = str(err.value)
    for needed in ("kaggle.com → Settings → API", "~/.kaggle/kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        assert needed in message
    assert calls == []

    def broken_file() -> object:
        raise ValueError("Kaggle credentials file at ~/.kaggle/kaggle.json is missing 'key' key")

    _fake_kagglehub(monkeypatch, broken_file, lambda *_: pytest.fail("no download without a token"))
    with pytest.raises(PneumoError, match="missing 'key' key: create an API token"):
        download(source="kaggle", to=tmp_path, **quiet())


def test_kaggle_download_and_its_errors(monkeypatch: pytest.MonkeyPatch, images: dict[str, bytes], tmp_path: Path) -> None:
    def fetch(handle: str, output_dir: str) -> str:
        for name, data in images.items():  # Kaggle's copy nests chest_xray/chest_xray/ and adds val/
            for top in ("chest_xray/", "chest_xray/chest_xray/"):
                file = Path(output_dir) / (top + name.removeprefix("chest_xray/"))
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(data)
        return output_dir

    calls = _fake_kagglehub(monkeypatch, lambda: object(), fetch)
    result = download(source="kaggle", to=tmp_path / "data", **quiet())
    assert calls == [(KAGGLE_HANDLE, str(tmp_path / "data" / "chest-xray-pneumonia"))]
    assert result.path == tmp_path / "data" / "chest-xray-pneumonia" / "chest_xray"
    assert result.archive is None and result.sha256 is None
    assert result.summary["splits"]["train"]["classes"] == {"NORMAL": 3, "PNEUMONIA": 3}

    def forbidden(*_: object) -> str:
        raise RuntimeError("403 Client Error: Forbidden")

    _fake_kagglehub(monkeypatch, lambda: object(), forbidden)
    with pytest.raises(PneumoError, match="403 Client Error.*API token"):
        download(source="kaggle", to=tmp_path / "data2", **quiet())
