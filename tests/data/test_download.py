"""pneumo.data.download: the steps in order, the recorded SHA-256, the sources and addresses, the command line.

The archives are built from real images of ../shared/data, laid out like ChestXRay2017.zip, and
served by an HTTP server on 127.0.0.1 (tests/data/conftest.py), or read through file:// URLs.
Nothing here reaches the internet or Kaggle.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

import pneumo.data.download as dl
from pneumo.data.download import URL_ENV, download
from pneumo.data.layout import discover
from pneumo.errors import PneumoError
from tests.data.conftest import ARCHIVE, Mirror, check_dataset, closed_port, quiet, sha, zip_archive

pytestmark = pytest.mark.usefixtures("offline")


def test_clean_download_then_quick_no_op(
    mirror: Mirror, dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path, pneumo_log: pytest.LogCaptureFixture
) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    result = download(url=url, to=to, progress=False)

    assert result.path == to / "chest_xray" and not result.reused
    check_dataset(result.path, images)
    assert result.archive == to / ARCHIVE and result.archive.read_bytes() == dataset_zip
    assert result.sha256 == sha(dataset_zip) and result.bytes == len(dataset_zip)
    record = json.loads((to / f"{ARCHIVE}.sha256.json").read_text())
    assert record["sha256"] == sha(dataset_zip) and record["extracted"] == "chest_xray"
    assert any("recorded SHA-256" in line for line in pneumo_log.messages)
    summary = result.summary
    assert summary["splits"]["train"]["classes"] == {"NORMAL": 3, "PNEUMONIA": 3}
    assert summary["splits"]["test"]["classes"] == {"NORMAL": 2, "PNEUMONIA": 2}
    assert summary["unreadable"] == []  # every image was decoded
    assert sorted(p.name for p in to.iterdir()) == sorted([ARCHIVE, f"{ARCHIVE}.sha256.json", "chest_xray"])  # no .part, no temp folder
    assert result.next_command == f"pneumo train --config configs/cpu.yaml --set data={to / 'chest_xray'} --out runs/cpu"
    assert mirror.ranges == [None]

    pneumo_log.clear()
    start = time.monotonic()
    again = download(url=url, to=to, progress=False)
    assert again.reused and again.path == result.path and again.sha256 == result.sha256
    assert mirror.ranges == [None]  # nothing fetched
    assert any("nothing to do" in line for line in pneumo_log.messages)
    assert "unreadable" not in again.summary  # counted, not decoded again
    assert time.monotonic() - start < 5


def test_the_deprecated_log_function_gets_the_lines_and_a_warning(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    """`download(log=...)` still works for one release; the lines go to it, and nothing is printed."""
    url = mirror.serve(ARCHIVE, dataset_zip)
    lines: list[str] = []
    with pytest.warns(DeprecationWarning, match=r"download\(log=\.\.\.\) is deprecated"):
        download(url=url, to=tmp_path / "data", progress=False, log=lines.append)
    assert any("recorded SHA-256" in line for line in lines)
    with pytest.raises(PneumoError, match="log must be a function"):
        download(url=url, to=tmp_path / "data", progress=False, log="print")  # type: ignore[arg-type]


def test_given_checksum_mismatch_moves_the_file_aside(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    wrong = "ab" * 32
    with pytest.raises(PneumoError) as err:
        download(url=url, to=to, sha256=wrong.upper(), **quiet())
    message = str(err.value)
    assert wrong in message and sha(dataset_zip) in message and "nothing was unpacked" in message
    assert f"moved it to {to / (ARCHIVE + '.bad')}" in message
    assert sorted(p.name for p in to.iterdir()) == [f"{ARCHIVE}.bad"]  # kept aside, not extracted, not recorded
    assert (to / f"{ARCHIVE}.bad").read_bytes() == dataset_zip

    result = download(url=url, to=to, sha256=sha(dataset_zip), **quiet())  # the right hash: downloads anew
    assert result.sha256 == sha(dataset_zip)


def test_recorded_checksum_catches_a_changed_file(mirror: Mirror, dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    first = download(url=url, to=to, **quiet())
    shutil.rmtree(first.path)
    (to / ARCHIVE).unlink()
    changed = zip_archive({**images, "chest_xray/train/NORMAL/IM-9999-0001.jpeg": b"not the same file"})
    mirror.files[ARCHIVE] = changed
    with pytest.raises(PneumoError) as err:
        download(url=url, to=to, **quiet())
    message = str(err.value)
    assert sha(changed) in message and sha(dataset_zip) in message
    assert f"delete {to / (ARCHIVE + '.sha256.json')}" in message
    assert not (to / "chest_xray").exists() and not (to / ARCHIVE).exists()
    assert json.loads((to / f"{ARCHIVE}.sha256.json").read_text())["sha256"] == sha(dataset_zip)  # the record stays


def test_env_mirror_and_argument_precedence(mirror: Mirror, dataset_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, mirror.serve(f"mirror/{ARCHIVE}", dataset_zip))
    assert download(to=tmp_path / "a", **quiet()).sha256 == sha(dataset_zip)
    assert mirror.ranges == [None]

    monkeypatch.setenv(URL_ENV, (tmp_path / "nowhere.zip").as_uri())
    result = download(url=mirror.serve("other/ChestXRay2017.zip", dataset_zip), to=tmp_path / "b", **quiet())
    assert result.sha256 == sha(dataset_zip) and len(mirror.ranges) == 2


def test_default_address_names_the_archive(mirror: Mirror, dataset_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mendeley's address ends in file_downloaded; the archive still gets its own name."""
    monkeypatch.setattr(dl, "MENDELEY_URL", mirror.serve("public-files/datasets/x/files/y/file_downloaded", dataset_zip))
    result = download(to=tmp_path / "data", **quiet())
    assert result.archive == tmp_path / "data" / ARCHIVE


def test_http_errors_and_bad_arguments(mirror: Mirror, tmp_path: Path) -> None:
    to = tmp_path / "data"
    with pytest.raises(PneumoError, match="HTTP 404"):
        download(url=mirror.serve("x", b"") + "/missing.zip", to=to, **quiet())
    with pytest.raises(PneumoError, match="cannot download .*check the network connection"):
        download(url=f"http://127.0.0.1:{closed_port()}/{ARCHIVE}", to=to, **quiet(retries=0))
    mirror.stall = 2.0
    with pytest.raises(PneumoError, match="timed out"):
        download(url=mirror.serve(ARCHIVE, b"late"), to=to, **quiet(retries=0, timeout=0.3))
    assert not to.exists()  # failed downloads leave no empty folder behind
    with pytest.raises(PneumoError, match="http://, https:// or file://"):
        download(url="ftp://127.0.0.1/x.zip", to=to, **quiet())
    with pytest.raises(PneumoError, match="e.g. file:///"):
        download(url="ChestXRay2017.zip", to=to, **quiet())
    with pytest.raises(PneumoError, match="not a SHA-256"):
        download(url=mirror.serve(ARCHIVE, b""), to=to, sha256="1234", **quiet())
    with pytest.raises(PneumoError, match="unknown source 'zenodo'"):
        download(source="zenodo", to=to, **quiet())
    with pytest.raises(PneumoError, match="leave out the URL"):
        download(source="kaggle", url=mirror.serve(ARCHIVE, b""), to=to, **quiet())


def test_the_command_line_downloads_from_a_loopback_mirror_and_refuses_a_hostile_archive(
    mirror: Mirror, dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path
) -> None:
    import os
    import subprocess

    def pneumo(*args: object) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "200", URL_ENV: ""}
        return subprocess.run([sys.executable, "-m", "pneumo", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)

    good = pneumo("data", "download", "--url", mirror.serve("ChestXRay2017.zip", dataset_zip), "--to", tmp_path / "data", "--quiet")
    assert good.returncode == 0, good.stderr
    assert "next: pneumo train --config configs/cpu.yaml --set data=" in good.stdout and "sha256" in good.stdout
    assert len(discover(tmp_path / "data" / "chest_xray").split("train")) > 0
    hostile = zip_archive({**images, "../evil.txt": b"pwned"})  # an entry that would land outside the target
    bad = pneumo("data", "download", "--url", mirror.serve(ARCHIVE, hostile), "--to", tmp_path / "hostile", "--quiet")
    assert bad.returncode == 2 and "\nerror:" in "\n" + bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "hostile").exists()
