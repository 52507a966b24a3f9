"""pneumo.data.summary.summarize: counts, class weights, and warnings about duplicates, bad files and leaks."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from pneumo.data.summary import summarize


def _byte_duplicates(files: list[Path]) -> list[set[Path]]:
    """Groups of files with identical bytes, found with hashlib independently of pneumo."""
    groups: dict[str, set[Path]] = defaultdict(set)
    for f in files:
        groups[hashlib.sha256(f.read_bytes()).hexdigest()].add(f)
    return [g for g in groups.values() if len(g) > 1]


@pytest.fixture
def messy_folder(tmp_path: Path, small_folder: Path) -> tuple[Path, Path, Path]:
    """small_folder plus one byte-identical copy and one corrupted file."""
    root = tmp_path / "messy"
    shutil.copytree(small_folder, root)
    original = sorted((root / "NORMAL").glob("*.jpeg"))[0]
    duplicate = root / "NORMAL" / "IM-9001-0001.jpeg"
    shutil.copy(original, duplicate)
    source = sorted((root / "PNEUMONIA").glob("*.jpeg"))[0]
    corrupted = root / "PNEUMONIA" / "person9999_bacteria_1.jpeg"
    corrupted.write_bytes(source.read_bytes()[:400])  # truncated: JPEG header but no image data
    return root, duplicate, corrupted


def test_small_folder_with_problems(messy_folder: tuple[Path, Path, Path]) -> None:
    root, duplicate, corrupted = messy_folder
    summary = summarize(root, progress=False)
    assert summary["layout"] == "folders"
    assert list(summary["splits"]) == ["all"]
    counts = {c: len(list((root / c).glob("*.jpeg"))) for c in ("NORMAL", "PNEUMONIA")}
    assert counts == {"NORMAL": 61, "PNEUMONIA": 61}
    stats = summary["splits"]["all"]
    assert stats["classes"] == counts
    assert stats["images"] == 122

    # duplicates, counted independently
    expected = _byte_duplicates(sorted(root.rglob("*.jpeg")))
    assert any(duplicate in g for g in expected)
    assert sorted(map(frozenset, expected), key=sorted) == sorted(
        (frozenset(Path(p) for p in g) for g in summary["duplicates"]), key=sorted
    )
    extra = sum(len(g) - 1 for g in expected)
    warnings = summary["warnings"]
    assert any("byte-identical" in w and w.startswith(f"{extra} files") for w in warnings), warnings

    # the corrupted file, and only it, is reported
    assert len(summary["unreadable"]) == 1
    assert str(corrupted) in summary["unreadable"][0]
    assert any("cannot be decoded" in w and w.startswith("1 files") and corrupted.name in w for w in warnings), warnings
    assert len(warnings) == 2  # a single split: no cross-split leak to report


def test_class_weights_are_n_over_2_nc(messy_folder: tuple[Path, Path, Path], small_folder: Path) -> None:
    for root in (messy_folder[0], small_folder):
        counts = {c: len(list((root / c).glob("*.jpeg"))) for c in ("NORMAL", "PNEUMONIA")}
        n = sum(counts.values())
        stats = summarize(root, check_images=False, progress=False)["splits"]["all"]
        for c, n_c in counts.items():
            assert stats["class_weights"][c] == pytest.approx(n / (2 * n_c))
        assert stats["pneumonia_to_normal"] == pytest.approx(counts["PNEUMONIA"] / counts["NORMAL"])
        # weighted, the classes count equally
        assert stats["class_weights"]["NORMAL"] * counts["NORMAL"] == pytest.approx(
            stats["class_weights"]["PNEUMONIA"] * counts["PNEUMONIA"]
        )


def test_clean_folder_has_no_warnings(tmp_path: Path, shared_data: Path) -> None:
    from tests.conftest import copy_class_folders

    root = copy_class_folders(tmp_path / "clean", {"NORMAL": 5, "PNEUMONIA": 5}, offset=1)
    files = sorted(root.rglob("*.jpeg"))
    assert _byte_duplicates(files) == []
    summary = summarize(root, progress=False)
    assert summary["warnings"] == [] and summary["duplicates"] == [] and summary["unreadable"] == []


def test_full_shared_data(shared_data: Path) -> None:
    summary = summarize(shared_data, check_images=False, progress=False)
    assert summary["layout"] == "kaggle"
    assert "unreadable" not in summary  # images were not decoded
    train = summary["splits"]["train"]
    # the numbers of ../shared/data/README.md
    assert train["images"] == 5216
    assert train["classes"] == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert train["pathogens"] == {"bacteria": 2530, "virus": 1345}
    assert train["patients_by_class"] == {"NORMAL": 1211, "PNEUMONIA": 1635}
    assert train["patients"] == 2846
    assert train["images_per_patient"]["mean"] == pytest.approx(5216 / 2846)
    assert train["class_weights"]["NORMAL"] == pytest.approx(5216 / (2 * 1341))
    assert train["class_weights"]["PNEUMONIA"] == pytest.approx(5216 / (2 * 3875))

    files = sorted((shared_data / "chest_xray" / "train").rglob("*.jpeg"))
    assert len(files) == 5216
    expected = _byte_duplicates(files)
    extra = sum(len(g) - 1 for g in expected)
    assert extra == 26
    found = [{Path(p) for p in g} for g in summary["duplicates"]]
    assert sorted(map(sorted, found)) == sorted(map(sorted, expected))
    assert any(w.startswith("26 files are byte-identical") for w in summary["warnings"]), summary["warnings"]


def test_patients_in_two_splits_are_reported(kaggle_root: Path) -> None:
    """kaggle_root's train and test are drawn from the same folders, so some children are in both."""

    def patient(name: str) -> str:  # an independent reading of the Kermany file names
        if m := re.match(r"(person\d+)_", name):
            return m.group(1)
        return re.match(r"((?:NORMAL2-)?IM-\d+)-", name).group(1)

    base = kaggle_root / "chest_xray"
    ids = {s: {patient(f.name) for f in (base / s).rglob("*.jpeg") if not f.name.startswith(".")} for s in ("train", "test")}
    both = ids["train"] & ids["test"]
    summary = summarize(kaggle_root, check_images=False, progress=False)
    assert list(summary["splits"]) == ["train", "test"]
    leaks = [w for w in summary["warnings"] if "both train and test" in w]
    assert both  # with this fixture, 3 children
    assert len(leaks) == 1 and leaks[0].startswith(f"{len(both)} patients")
    assert any(leaks[0].endswith(f"(e.g. {p})") for p in both)
    assert summary["splits"]["test"]["classes"] == {"NORMAL": 20, "PNEUMONIA": 30}


@pytest.mark.parametrize("check_images", [True, False])
def test_a_pipe_named_like_an_image_is_listed_as_unreadable_not_waited_on(tmp_path: Path, check_images: bool) -> None:
    import os

    from tests.conftest import copy_class_folders, deadline

    root = copy_class_folders(tmp_path / "data", {"NORMAL": 3, "PNEUMONIA": 3})
    os.mkfifo(root / "NORMAL" / "pipe.jpeg")

    with deadline(20):
        summary = summarize(root, check_images=check_images, progress=False)
    (message,) = [m for m in summary["unreadable"] if "pipe.jpeg" in m]
    assert "named pipe" in message
