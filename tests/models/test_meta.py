"""Checkpoint metadata as a typed record: round trip, and refusal of what does not fit."""
from __future__ import annotations

import pytest

from pneumo.errors import PneumoError
from pneumo.models.meta import CheckpointMeta

BASE = {"architecture": "seed_cnn", "task": "binary", "classes": ["NORMAL", "PNEUMONIA"], "num_outputs": 1,
        "image_size": 64, "mean": 0, "std": 1.0, "threshold": 0.4}


def test_round_trip_through_a_dict() -> None:
    meta = CheckpointMeta.from_dict({**BASE, "epoch": 3, "config": {"epochs": 3}})
    assert meta.mean == 0.0 and isinstance(meta.mean, float) and meta.epoch == 3
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta
    assert meta.replace(threshold=0.7).threshold == 0.7 and meta.threshold == 0.4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_size": "224"}, "image_size is '224'"),
        ({"threshold": True}, "threshold is True"),
        ({"threshold": float("nan")}, "threshold is nan"),
        ({"classes": "NORMAL"}, "classes is 'NORMAL'"),
        ({"task": "viral"}, "task 'viral'"),
        ({"num_outputs": 3}, "do not fit the binary task"),
        ({"config": [1]}, "config is"),
    ],
)
def test_wrong_kinds_are_refused_with_the_field_named(change: dict, message: str) -> None:
    with pytest.raises(PneumoError, match=message.replace("(", r"\(")):
        CheckpointMeta.from_dict({**BASE, **change}, "meta.json")


def test_missing_fields_are_named() -> None:
    values = {k: v for k, v in BASE.items() if k not in ("std", "threshold")}
    with pytest.raises(PneumoError, match="lacks std, threshold"):
        CheckpointMeta.from_dict(values)
