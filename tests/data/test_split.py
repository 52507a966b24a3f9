"""pneumo.data.split: patient-grouped vs image-level validation splits on the real training set."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from pathlib import Path

import pytest

from pneumo.data.layout import Record, discover
from pneumo.data.split import shared_patients, split_records, subsample, write_split
from pneumo.errors import PneumoError


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[Record]:
    return discover(shared_data).split("train")


def _pneumonia_share(recs: list[Record]) -> float:
    return sum(r.label == "PNEUMONIA" for r in recs) / len(recs)


def _paths(recs: list[Record]) -> list[Path]:
    return [r.path for r in recs]


@pytest.fixture(scope="module")
def patient_split(records: list[Record]) -> tuple[list[Record], list[Record]]:
    return split_records(records, 0.2, seed=0, by="patient")


def test_patient_split_partitions_the_records(records: list[Record], patient_split) -> None:
    train, val = patient_split
    assert len(train) + len(val) == len(records)
    assert set(_paths(train)).isdisjoint(_paths(val))
    assert set(_paths(train)) | set(_paths(val)) == set(_paths(records))


def test_patient_split_shares_no_patient(patient_split) -> None:
    train, val = patient_split
    assert shared_patients(train, val) == set()
    assert not {r.patient_id for r in train} & {r.patient_id for r in val}


def test_patient_split_keeps_proportions(records: list[Record], patient_split) -> None:
    train, val = patient_split
    whole = _pneumonia_share(records)
    assert abs(_pneumonia_share(val) - whole) <= 0.02
    assert abs(_pneumonia_share(train) - whole) <= 0.02
    assert abs(len(val) / len(records) - 0.2) <= 0.03


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_patient_split_other_fractions(records: list[Record], fraction: float) -> None:
    train, val = split_records(records, fraction, seed=3)
    assert shared_patients(train, val) == set()
    assert abs(len(val) / len(records) - fraction) <= 0.03


@pytest.mark.parametrize("fraction", [0.4, 0.6])
def test_patient_split_large_fractions(records: list[Record], fraction: float) -> None:
    train, val = split_records(records, fraction, seed=0)
    assert shared_patients(train, val) == set()
    assert abs(len(val) / len(records) - fraction) <= 0.03


def test_patient_split_deterministic_per_seed(records: list[Record], patient_split) -> None:
    again = split_records(records, 0.2, seed=0, by="patient")
    assert _paths(again[1]) == _paths(patient_split[1])
    other = split_records(records, 0.2, seed=1, by="patient")
    assert set(_paths(other[1])) != set(_paths(patient_split[1]))


def test_image_split_leaks_patients(records: list[Record]) -> None:
    """The notebook's split: a child with k images lands on both sides with probability about
    1 - 0.8^k - 0.2^k (0.32 for k=2, 0.48 for k=3). The README gives ~2.4 images per pneumonia
    patient, so several hundred of the ~1600 such children should be split in two."""
    train, val = split_records(records, 0.2, seed=0, by="image")
    assert len(train) + len(val) == len(records)
    assert abs(len(val) / len(records) - 0.2) <= 0.01
    per_patient = Counter(r.patient_id for r in records)
    expected = sum(1 - 0.8**k - 0.2**k for k in per_patient.values())
    leaked = shared_patients(train, val)
    assert expected > 300
    assert len(leaked) > 100
    assert len(leaked) > 0.7 * expected
    # the same split is reproduced from the seed
    assert _paths(split_records(records, 0.2, seed=0, by="image")[1]) == _paths(val)


def test_pathogen_task_split_is_stratified_by_pathogen(records: list[Record]) -> None:
    train, val = split_records(records, 0.2, seed=0, task="pathogen")
    assert shared_patients(train, val) == set()
    share = lambda recs, p: sum(r.pathogen == p for r in recs) / len(recs)  # noqa: E731
    for pathogen in ("bacteria", "virus"):
        assert abs(share(val, pathogen) - share(records, pathogen)) <= 0.03


def test_single_class_raises(records: list[Record]) -> None:
    normal = [r for r in records if r.label == "NORMAL"][:50]
    with pytest.raises(PneumoError, match="single class"):
        split_records(normal, 0.2, seed=0)


def test_too_few_of_a_class_raises(records: list[Record]) -> None:
    few = [r for r in records if r.label == "NORMAL"][:10] + [r for r in records if r.label == "PNEUMONIA"][:1]
    with pytest.raises(PneumoError, match="at least 2"):
        split_records(few, 0.2, seed=0)


def test_unknown_method_raises(records: list[Record]) -> None:
    with pytest.raises(PneumoError, match="'random'"):
        split_records(records[:100] + records[-100:], 0.2, seed=0, by="random")


@pytest.mark.parametrize("limit", [100, 523])
def test_subsample_keeps_class_ratio(records: list[Record], limit: int) -> None:
    sample = subsample(records, limit, seed=0)
    assert len(sample) == limit
    assert len(set(_paths(sample))) == limit
    assert set(_paths(sample)) <= set(_paths(records))
    assert abs(_pneumonia_share(sample) - _pneumonia_share(records)) <= 1 / limit + 1e-9
    # kept in the original order
    order = {p: i for i, p in enumerate(_paths(records))}
    assert [order[p] for p in _paths(sample)] == sorted(order[p] for p in _paths(sample))
    assert _paths(subsample(records, limit, seed=0)) == _paths(sample)
    assert _paths(subsample(records, limit, seed=1)) != _paths(sample)


def test_subsample_no_limit(records: list[Record]) -> None:
    assert subsample(records, 0, seed=0) == records
    assert subsample(records, len(records) + 5, seed=0) == records


def test_subsample_below_the_number_of_classes(records: list[Record]) -> None:
    with pytest.raises(PneumoError, match="limit=1 is too small"):
        subsample(records, 1, seed=0)


def test_patient_split_with_a_single_patient(records: list[Record]) -> None:
    both = records[:10] + records[-10:]
    assert {r.label for r in both} == {"NORMAL", "PNEUMONIA"}
    one_patient = [dataclasses.replace(r, patient_id="unknown") for r in both]
    with pytest.raises(PneumoError, match="patient"):
        split_records(one_patient, 0.2, seed=0)


def test_write_split_round_trips(tmp_path: Path, records: list[Record], patient_split) -> None:
    train, val = patient_split
    out = tmp_path / "split.csv"
    write_split(out, {"train": train, "val": val})
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(records)
    assert Counter(row["split"] for row in rows) == {"train": len(train), "val": len(val)}
    assert [row["path"] for row in rows] == [str(p) for p in _paths(train) + _paths(val)]
    assert [row["patient_id"] for row in rows] == [r.patient_id for r in train + val]
    assert [row["pathogen"] or None for row in rows] == [r.pathogen for r in train + val]
    # the file is itself a manifest that gives back the same records
    ds = discover(out)
    assert ds.layout == "manifest"
    assert ds.split("train") == train and ds.split("val") == val


def test_a_split_written_from_relative_paths_reads_back_from_any_folder(
    tmp_path: Path, records: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training from `../shared/data` writes `RUN/split.csv`; it must work as a manifest from
    wherever it is read (the tutorial runs from docs/), not only from where training ran."""
    (tmp_path / "project" / "docs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project")
    relative = [dataclasses.replace(r, path=Path(os.path.relpath(r.path))) for r in records[:30]]
    assert not relative[0].path.is_absolute()
    out = Path("runs/cpu/split.csv")
    write_split(out, {"train": relative[:20], "val": relative[20:]})

    monkeypatch.chdir(tmp_path / "project" / "docs")
    ds = discover(Path("..") / out)
    assert [p.resolve() for p in _paths(ds.split("val"))] == [r.path.resolve() for r in records[20:30]]
    assert [r.label for r in ds.split("train")] == [r.label for r in records[:20]]
