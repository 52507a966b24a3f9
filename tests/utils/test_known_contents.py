"""Emptying a folder of pneumo's outputs: only when every entry is known, never through a symlink."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.utils.known_contents import known_contents
from tests.utils.conftest import one_line


LAYOUT = {"config.yaml": None, "history.csv": None, "checkpoints": {"last": {"*.safetensors": None, "meta.json": None}}}


def _run_like(folder: Path) -> Path:
    (folder / "checkpoints" / "last").mkdir(parents=True)
    (folder / "config.yaml").write_text("model: seed_cnn\n")
    (folder / "history.csv").write_text("epoch\n1\n")
    (folder / "checkpoints" / "last" / "weights.safetensors").write_bytes(b"w" * 2000)
    (folder / "checkpoints" / "last" / "meta.json").write_text("{}")
    (folder / "checkpoints" / "last" / ".tmpAb12Cd").write_bytes(b"t")  # a killed write's leftover
    (folder / ".DS_Store").write_bytes(b"junk")
    return folder


def test_known_contents_are_listed_and_removed_keeping_the_folder(tmp_path: Path) -> None:
    run = _run_like(tmp_path / "run")
    contents = known_contents(run, LAYOUT, "a run folder")
    assert len(contents.files) == 6 and contents.n_bytes == 2000 + 16 + 8 + 2 + 1 + 4
    contents.remove()
    assert run.is_dir() and list(run.iterdir()) == []


@pytest.mark.parametrize(
    ("intruder", "named"),
    [
        ("src/main.py", "src/"),
        ("notes.txt", "notes.txt"),
        ("checkpoints/last/thesis.tex", "checkpoints/last/thesis.tex"),
        ("config.yaml/x", "config.yaml/"),
    ],
)
def test_a_folder_with_anything_unknown_is_refused_whole(tmp_path: Path, intruder: str, named: str) -> None:
    run = _run_like(tmp_path / "run")
    if intruder == "config.yaml/x":
        (run / "config.yaml").unlink()
    (run / intruder).parent.mkdir(parents=True, exist_ok=True)
    (run / intruder).write_text("precious")
    before = sorted(p for p in run.rglob("*"))
    with pytest.raises(PneumoError, match=rf"^{run} holds {named}, which a run folder never has; refusing to delete it") as err:
        known_contents(run, LAYOUT, "a run folder")
    one_line(err.value)
    assert sorted(p for p in run.rglob("*")) == before and (run / intruder).read_text() == "precious"


def test_a_symlink_inside_is_refused_and_never_followed(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "weights.safetensors").write_text("not yours")
    run = _run_like(tmp_path / "run")
    (run / "checkpoints" / "best").symlink_to(precious, target_is_directory=True)
    with pytest.raises(PneumoError, match=r"holds checkpoints/best, a symlink, which a run folder never has"):
        known_contents(
            run, {**LAYOUT, "checkpoints": {"last": LAYOUT["checkpoints"]["last"], "best": LAYOUT["checkpoints"]["last"]}}, "a run folder"
        )
    assert (precious / "weights.safetensors").read_text() == "not yours" and (run / "config.yaml").exists()
