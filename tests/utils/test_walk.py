"""The one folder walker: every command lists the same files for the same folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.inference.batch import iter_source, predict_archive
from pneumo.inference.predict import predict
from pneumo.utils.walk import expand_paths, image_files, is_junk, iter_image_files
from tests.conftest import pick


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    """A folder as NAS boxes and archives leave them: a symlinked subfolder (outside the tree),
    a Synology @eaDir and a macOS __MACOSX beside the films, dot files, a link back to the top."""
    films = pick("NORMAL", 3) + pick("PNEUMONIA", 3)
    root = tmp_path / "scans"
    (root / "a" / "deeper").mkdir(parents=True)
    shutil.copy(films[0], root / "z_first.jpeg")
    shutil.copy(films[1], root / "a" / films[1].name)
    shutil.copy(films[2], root / "a" / "deeper" / films[2].name)
    elsewhere = tmp_path / "elsewhere"  # outside the tree: its link is followed
    elsewhere.mkdir()
    shutil.copy(films[3], elsewhere / films[3].name)
    os.symlink(elsewhere, root / "linked")
    os.symlink(root, root / "a" / "back_to_top")  # a loop: not followed
    for junk in ("@eaDir", "__MACOSX"):
        (root / junk).mkdir()
        shutil.copy(films[4], root / junk / "thumb.jpeg")
    (root / "a" / ".hidden.jpeg").write_bytes(films[5].read_bytes())
    return root


def _names(paths: list) -> list[str]:
    return [Path(p).name for p in paths]


def test_the_walk_skips_junk_and_loops_and_follows_links_out(archive: Path) -> None:
    files = image_files(archive)
    assert len(files) == len(set(map(os.path.realpath, files))) == 4
    assert not any(part in ("@eaDir", "__MACOSX", "back_to_top") for f in files for part in f.parts)
    assert any("linked" in f.parts for f in files)
    assert files[0].name == "z_first.jpeg"  # a folder's own files come before its subfolders
    assert list(iter_image_files(archive)) == files


def test_predict_and_predict_archive_list_the_same_files(archive: Path, tmp_path: Path) -> None:
    listed = [str(p) for p in expand_paths([archive])]
    assert list(iter_source(archive)()) == listed  # same set, same order
    predicted = predict([archive], model=None)
    summary = predict_archive(archive, out=tmp_path / "out.csv", progress=False)
    rows = (tmp_path / "out.csv").read_text().splitlines()[1:]
    assert summary.done == len(predicted) == 4
    assert sorted(row.split(",")[0] for row in rows) == sorted(p.path for p in predicted) == sorted(listed)


def test_junk_names() -> None:
    assert is_junk("@eaDir") and is_junk("__MACOSX") and is_junk(".DS_Store") and is_junk("._IM-0001.jpeg")
    assert not is_junk("NORMAL") and not is_junk("person1_virus_6.jpeg")


def test_an_unreadable_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="cannot read folder"):
        image_files(tmp_path / "missing")
