"""Checkpoint metadata as a typed record: round trip, its checksum, and refusal of what does not fit.

`CheckpointMeta.load` is the one validator every reader uses (a model folder's meta.json, an
export's checkpoint record, ensembles, calibrated copies); these tests feed it dicts directly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.models.meta import CHECKSUM, FORMAT_VERSION, CheckpointMeta, metadata_sha256, seal

BASE = {
    "architecture": "seed_cnn",
    "task": "binary",
    "classes": ["NORMAL", "PNEUMONIA"],
    "num_outputs": 1,
    "image_size": 64,
    "mean": 0,
    "std": 1.0,
    "threshold": 0.4,
}
SHA = "ab" * 32
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "src" / "pneumo" / "weights"
SHIPPED = json.loads((WEIGHTS_DIR / "meta.json").read_text())  # the bundled model's record, as pneumo wrote it
# an ensemble's record, as pneumo wrote it (the bundled model of 0.12, before the distilled student)
ENSEMBLE = json.loads((Path(__file__).parent / "ensemble_meta.json").read_text())


def _record(**changes: object) -> dict:
    """A valid sealed record with some fields changed and sealed again: what a forger who recomputes the checksum writes."""
    return seal({**CheckpointMeta.from_dict({**BASE, "weights_sha256": SHA}).record(), **changes})


def test_round_trip_through_a_dict() -> None:
    meta = CheckpointMeta.from_dict({**BASE, "epoch": 3, "config": {"epochs": 3}})
    assert meta.mean == 0.0 and isinstance(meta.mean, float) and meta.epoch == 3
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta
    assert meta.replace(threshold=0.7).threshold == 0.7 and meta.threshold == 0.4


def test_a_record_carries_its_checksum_and_loads_back() -> None:
    record = CheckpointMeta.from_dict({**BASE, "weights_sha256": SHA, "val_metrics": {"auc": float("nan")}}).record()
    assert record["format_version"] == FORMAT_VERSION == 2 and record[CHECKSUM] == metadata_sha256(record)
    again = json.loads(json.dumps(record, indent=2))  # through the file
    meta = CheckpointMeta.load(again, "meta.json")
    assert meta.threshold == 0.4 and meta.meta_sha256 == record[CHECKSUM]
    assert meta.record() == record  # writing what was read changes nothing


def test_the_shipped_records_are_sealed_and_agree() -> None:
    meta = CheckpointMeta.load(SHIPPED, "meta.json")
    export = json.loads((WEIGHTS_DIR / "pneumo.json").read_text())
    assert export[CHECKSUM] == metadata_sha256(export)
    assert export["checkpoint"] == SHIPPED and CheckpointMeta.load(export["checkpoint"], "pneumo.json") == meta


@pytest.mark.parametrize(
    "edit",
    [
        {"threshold": 2.0},
        {"threshold": float("nan")},
        {"threshold": -1},
        {"threshold": "0.5"},
        {"threshold": True},
        {"threshold": 0.41},
        {"task": "pathogen"},
        {"classes": ["PNEUMONIA", "NORMAL"]},
        {"std": 0},
        {"std": -0.25},
        {"mean": 0.5},
        {"temperature": 3.0},
        {"weights_sha256": "cd" * 32},
        {"architecture": "resnet18"},
        {"epoch": 1},
    ],
    ids=lambda e: ",".join(f"{k}={v!r}" for k, v in e.items()),
)
def test_an_edited_record_is_refused_as_edited(edit: dict) -> None:
    record = {**_record(), **edit}
    with pytest.raises(PneumoError, match=r"meta\.json was edited or damaged: .*checksum.*written by pneumo"):
        CheckpointMeta.load(record, "m/meta.json")


@pytest.mark.parametrize(
    "drop, message",
    [
        (CHECKSUM, r"has no metadata checksum \(meta_sha256\).*must be written by pneumo"),
        ("weights_sha256", "edited or damaged"),
        ("threshold", "edited or damaged"),
    ],
)
def test_a_deleted_checksum_or_field_is_refused(drop: str, message: str) -> None:
    record = _record()
    del record[drop]
    with pytest.raises(PneumoError, match=message):
        CheckpointMeta.load(record, "meta.json")


def test_without_a_weights_checksum_the_check_is_not_off() -> None:
    record = _record()
    del record["weights_sha256"]
    with pytest.raises(PneumoError, match=r"no weights checksum \(weights_sha256\)"):
        CheckpointMeta.load(seal(record), "meta.json")
    with pytest.raises(PneumoError, match="no weights checksum"):
        CheckpointMeta.load(_record(weights_sha256=""), "meta.json")


@pytest.mark.parametrize(
    "version, message",
    [
        (1, r"format 1, which has no metadata checksum.*pneumo models upgrade"),
        (3, "newer pneumo"),
        ("2", "format '2' is not supported"),
        (None, "format None is not supported"),
    ],
)
def test_other_formats_are_refused_with_what_to_do(version: object, message: str) -> None:
    with pytest.raises(PneumoError, match=message):
        CheckpointMeta.load(_record(format_version=version), "meta.json")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"threshold": 2.0}, r"threshold 2\.0 is not a probability in \[0, 1\]"),
        ({"threshold": -1}, r"threshold -1\.0 is not a probability"),
        ({"threshold": float("nan")}, "threshold is nan, which is not a valid threshold"),
        ({"threshold": float("inf")}, "threshold is inf"),
        ({"threshold": "0.5"}, "threshold is '0.5', which is not a valid threshold"),
        ({"threshold": True}, "threshold is True"),
        ({"threshold": None}, "threshold is None"),
        ({"temperature": 0}, "temperature 0.0 is not positive"),
        ({"temperature": -1.5}, "temperature -1.5 is not positive"),
        ({"temperature": float("nan")}, "temperature is nan"),
        ({"std": 0}, "std 0.0 is not positive"),
        ({"std": -0.25}, "std -0.25 is not positive"),
        ({"std": float("nan")}, "std is nan"),
        ({"mean": float("inf")}, "mean is inf"),
        ({"image_size": 0}, r"image_size 0 is outside 16\.\.4096"),
        ({"image_size": 100000}, "image_size 100000 is outside"),
        ({"image_size": 64.0}, "image_size is 64.0"),
        ({"task": "pathogen"}, r"classes \['NORMAL', 'PNEUMONIA'\] do not fit the pathogen task"),
        ({"task": "viral"}, "task 'viral' is not binary or pathogen"),
        ({"classes": ["NORMAL", "PNEUMONIA", "COVID"]}, "do not fit the binary task"),
        ({"classes": ["PNEUMONIA", "NORMAL"]}, "do not fit the binary task"),
        ({"classes": "NORMAL"}, "classes is 'NORMAL'"),
        ({"num_outputs": 3}, "num_outputs 3 does not fit the binary task"),
        ({"in_chans": 3}, "in_chans 3 is not 1"),
        ({"dropout": 1.0}, r"dropout 1\.0 is not in \[0, 1\)"),
        ({"epoch": -1}, "epoch -1 is negative"),
        ({"n_val": -5}, "must not be negative"),
        ({"weights_sha256": "abc"}, "weights_sha256 'abc' is not a sha256 checksum"),
        ({"features_sha256": "XYZ"}, "features_sha256 'XYZ' is not a sha256"),
        ({"config": [1]}, "config is"),
        ({"architecture": ""}, "architecture is empty"),
        ({"members": [{"architecture": "seed_cnn", "num_outputs": 1, "mean": 0, "std": 1}]}, "a seed_cnn model lists ensemble members"),
        ({"threshold_source": "me"}, "unknown field"),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, dict) else "",
)
def test_field_checks_hold_even_when_the_checksum_is_recomputed(change: dict, message: str) -> None:
    with pytest.raises(PneumoError, match=f"meta.json.*{message}"):
        CheckpointMeta.load(json.loads(json.dumps(_record(**change))), "m/meta.json")


def test_a_pathogen_record_is_accepted_with_its_own_classes() -> None:
    meta = CheckpointMeta.load(_record(task="pathogen", classes=["normal", "bacteria", "virus"], num_outputs=3), "meta.json")
    assert meta.task_spec.num_outputs == 3


def test_the_registry_names_the_architectures_a_loader_accepts() -> None:
    with pytest.raises(PneumoError, match="unknown model 'vgg99'; available: ensemble, seed_cnn"):
        CheckpointMeta.load(_record(architecture="vgg99"), "meta.json", architectures={"seed_cnn", "ensemble"})
    assert CheckpointMeta.load(_record(), "meta.json", architectures={"seed_cnn"}).architecture == "seed_cnn"


@pytest.mark.parametrize(
    "member_change, message",
    [
        ({"std": 0}, "ensemble member 1: std 0 is not positive"),
        ({"temperature": float("nan")}, "ensemble member 1: temperature is nan"),
        ({"num_outputs": 3}, "ensemble member 1: num_outputs 3 does not fit the binary task"),
        ({"architecture": "ensemble"}, "ensemble member 1: unknown model 'ensemble'"),
        ({"mean": "0.5"}, "ensemble member 1: mean is '0.5'"),
        ({"seed": 3}, r"ensemble member 1: unknown field\(s\) \['seed'\]"),
    ],
)
def test_an_ensembles_members_are_validated_too(member_change: dict, message: str) -> None:
    assert CheckpointMeta.load(ENSEMBLE, "ensemble_meta.json").members  # as written, it loads
    members = copy.deepcopy(ENSEMBLE["members"])
    members[0].update(member_change)
    with pytest.raises(PneumoError, match=message):
        CheckpointMeta.load(seal({**ENSEMBLE, "members": members}), "meta.json")
    with pytest.raises(PneumoError, match="an ensemble lists no members"):
        CheckpointMeta.load(seal({**ENSEMBLE, "members": []}), "meta.json")
    with pytest.raises(PneumoError, match=r"an ensemble takes images in \[0, 1\]"):
        CheckpointMeta.load(seal({**ENSEMBLE, "std": 0.25}), "meta.json")


def test_writing_validates_first() -> None:
    meta = CheckpointMeta.from_dict({**BASE, "weights_sha256": SHA})
    for bad in (meta.replace(threshold=float("nan")), meta.replace(temperature=0.0), meta.replace(task="pathogen")):
        with pytest.raises(PneumoError, match="the metadata to write"):
            bad.record()


def test_missing_fields_are_named() -> None:
    values = {k: v for k, v in BASE.items() if k not in ("std", "threshold")}
    with pytest.raises(PneumoError, match="lacks std, threshold"):
        CheckpointMeta.from_dict(values)
    with pytest.raises(PneumoError, match="is not a JSON object"):
        CheckpointMeta.load([BASE], "meta.json")


def test_a_record_is_the_same_however_its_numbers_were_given() -> None:
    """Ints for floats and numpy scalars are written as the floats they load as, so a record read
    back and written again (an export embedding its checkpoint's) keeps its checksum."""
    import numpy as np

    loose = CheckpointMeta("seed_cnn", "binary", ("NORMAL", "PNEUMONIA"), np.int64(1), 64, 0, np.float32(1.0), 1, weights_sha256=SHA)
    record = loose.record()
    assert record["threshold"] == 1.0 and isinstance(record["threshold"], float) and record["classes"] == ["NORMAL", "PNEUMONIA"]
    assert CheckpointMeta.load(json.loads(json.dumps(record)), "meta.json").record() == record


@pytest.mark.parametrize("field", ["threshold", "temperature", "mean", "std", "dropout"])
def test_an_integer_too_large_for_a_float_is_refused_not_a_crash(field: str) -> None:
    with pytest.raises(PneumoError, match=field):
        CheckpointMeta.load(_record(**{field: 10**400}), "meta.json")
    members = copy.deepcopy(ENSEMBLE["members"])
    members[0]["temperature"] = 10**400
    with pytest.raises(PneumoError, match="ensemble member 1: temperature"):
        CheckpointMeta.load(seal({**ENSEMBLE, "members": members}), "meta.json")
