"""Input checks: rule warnings from what a file says about itself, and how check_inputs adds the feature distance."""

from __future__ import annotations

import json

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from pneumo.data.io import read_image_with_info
from pneumo.errors import PneumoError
from pneumo.inference.checks import (
    SiteCheck,
    FeatureCheck,
    abstain_reason,
    check_inputs,
    rule_warnings,
    warning_kind,
)
from tests.conftest import SAMPLES, TRAIN


def info(**overrides: object) -> SimpleNamespace:
    """An ImageInfo-like description of a plain 1024x1024 CR chest PA film, with overrides."""
    fields = dict(
        format="DICOM",
        width=1024,
        height=1024,
        mode="MONOCHROME2",
        colourfulness=0.0,
        frames=1,
        modality="CR",
        body_part="CHEST",
        view_position="PA",
        patient_age_years=None,
    )
    return SimpleNamespace(**{**fields, **overrides})


@pytest.mark.parametrize(
    "overrides, expected, kind",
    [
        ({"modality": "OT"}, "modality is OT", "not a radiograph"),
        ({"modality": "CT"}, "modality is CT", "not a radiograph"),
        ({"body_part": "HEAD"}, "body part is HEAD", "not the chest"),
        ({"view_position": "LL"}, "lateral", "not a frontal film"),
        ({"view_position": "LATERAL"}, "lateral", "not a frontal film"),
        (
            {"format": "JPEG", "mode": "RGB", "modality": None, "body_part": None, "view_position": None, "colourfulness": 40.0},
            "colour",
            "colour image",
        ),
        ({"width": 3000, "height": 600}, "elongated", "elongated image"),
        ({"width": 300, "height": 1000}, "elongated", "elongated image"),
        ({"width": 48, "height": 48}, "too small", "thumbnail"),
    ],
)
def test_rule_warnings_name_what_is_odd_and_carry_their_kind(overrides: dict, expected: str, kind: str) -> None:
    import pickle

    warnings = rule_warnings(info(**overrides))
    assert len(warnings) == 1 and expected in warnings[0]
    assert warnings[0].endswith("the result may be meaningless")
    assert warning_kind(warnings[0]) == kind == pickle.loads(pickle.dumps(warnings[0])).kind  # a worker process keeps it
    assert json.loads(json.dumps(warnings)) == [str(warnings[0])]  # text wherever text goes
    assert warning_kind(str(warnings[0])) == "other"  # the kind is declared, never read from the words


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"modality": "DX", "body_part": None, "view_position": None},
        {"body_part": "Thorax", "view_position": "AP"},
        {"body_part": "PORT CHEST", "modality": "dx"},
        {"width": 2000, "height": 2500},
        {"colourfulness": 9.0},
    ],
)
def test_frontal_chest_films_pass(overrides: dict) -> None:
    assert rule_warnings(info(**overrides)) == []


def test_rules_on_real_files() -> None:
    _, jpeg = read_image_with_info(next((TRAIN / "NORMAL").glob("*.jpeg")), size_hint=224)
    assert rule_warnings(jpeg) == []
    _, other = read_image_with_info(SAMPLES / "dicom" / "not_a_chest_ot.dcm")
    assert ["modality is OT" in w for w in rule_warnings(other)] == [True]
    _, adult = read_image_with_info(SAMPLES / "dicom" / "dx_chest_uncompressed.dcm")  # PatientAge "081"
    assert adult.patient_age_years == 81 and ["81 years old" in w for w in rule_warnings(adult)] == [True]


@pytest.mark.parametrize("age, warns", [(None, False), (0.5, False), (4.0, False), (16.0, False), (17.0, True), (62.0, True)])
def test_adults_are_out_of_scope(age: float | None, warns: bool) -> None:
    assert bool(rule_warnings(info(patient_age_years=age))) is warns


def _check(limit: float = 21.4, probe_limit: float | None = None) -> FeatureCheck:
    """A check on 2 penultimate features (identity precision) and, with a probe limit, 1 statistic scored as itself."""
    if probe_limit is None:
        return FeatureCheck(np.zeros(2), np.eye(2), limit)
    return FeatureCheck(np.zeros(2), np.eye(2), limit, np.zeros(1), np.ones(1), np.ones(1), 0.0, probe_limit)


def test_check_inputs_combines_both() -> None:
    limit = 21.4
    check = _check(limit)
    scores = check.scores(np.array([[limit / 2, 0], [limit * 3, 0], [0, limit * 2]]))
    warnings = check_inputs([info(), info(modality="OT"), None], scores, check)
    assert warnings[0] == []
    assert len(warnings[1]) == 2 and "modality is OT" in warnings[1][0] and "unlike the chest X-rays" in warnings[1][1]
    assert len(warnings[2]) == 1 and "unlike the chest X-rays" in warnings[2][0]
    assert check_inputs([info(body_part="KNEE")]) == [[rule_warnings(info(body_part="KNEE"))[0]]]
    with pytest.raises(ValueError):
        check_inputs([info()], np.zeros((2, 2)), check)
    with pytest.raises(ValueError):
        check_inputs([info()], np.zeros((1, 2)))


def test_the_abstain_rule_holds_a_warned_input_for_its_first_warning() -> None:
    """The one rule classify and evaluate share: any warning, the first is the reason (its kind kept); abstain=False judges all."""
    warned = rule_warnings(info(modality="OT", body_part="KNEE"))
    reason = abstain_reason(warned)
    assert reason == warned[0] and warning_kind(reason) == "not a radiograph"
    assert abstain_reason([]) is None and abstain_reason(warned, abstain=False) is None


def test_the_probe_warns_on_its_own_and_says_what_it_saw() -> None:
    check = _check(10.0, probe_limit=2.0)
    scores = check.scores(np.array([[1, 0, 1.5], [1, 0, 2.5], [20, 0, 2.5]]))
    np.testing.assert_allclose(scores[:, :2], [[1, 1.5], [1, 2.5], [20, 2.5]])
    assert np.isnan(scores[:, 2:]).all()  # no site: its scores are NaN
    assert check.flags(scores).tolist() == [False, True, True]
    warnings = check_inputs([None] * 3, scores, check)
    assert warnings[0] == [] and len(warnings[1]) == 1 and "adult's or another site's" in warnings[1][0] and len(warnings[2]) == 2
    assert {warning_kind(w) for w in warnings[2]} == {"unlike the training films", "adult or other-site film"}
    assert np.isnan(_check().scores(np.zeros((1, 5)))[0, 1])  # no probe: its score is NaN and never flags


def _site(distance_limit: float, probe_limit: float) -> SiteCheck:
    """A site check on the same toy rows: distance from the origin, the statistic scored as itself."""
    return SiteCheck(np.zeros(2), np.eye(2), distance_limit, np.zeros(1), np.ones(1), np.ones(1), 0.0, probe_limit)


def test_a_site_check_accepts_only_what_lies_within_both_of_its_limits() -> None:
    rows = np.array([[1, 0, 1.5], [1, 0, 2.5], [20, 0, 2.5], [1, 0, 9.0], [50, 0, 0.0]])
    plain = _check(10.0, probe_limit=2.0)
    site = plain.with_site(_site(distance_limit=25.0, probe_limit=3.0))
    scores = site.scores(rows)
    np.testing.assert_allclose(scores[:, 2:], [[1, 1.5], [1, 2.5], [20, 2.5], [1, 9.0], [50, 0.0]])
    assert plain.flags(plain.scores(rows)).tolist() == [False, True, True, True, True]
    # the site widens along its own variation only: far from its films (distance 50) or like the outliers (probe 9) stays refused
    assert site.flags(scores).tolist() == [False, False, False, True, True]
    assert site.own_flags(scores).tolist() == [False, True, True, True, True]
    assert check_inputs([None] * 5, scores, site)[1] == [] and "adult's or another site's" in check_inputs([None] * 5, scores, site)[3][0]


def test_a_site_check_and_outlier_rows_survive_their_arrays_and_damage_is_refused() -> None:
    check = replace(_check(10.0, probe_limit=2.0), outlier_rows=np.ones((3, 1))).with_site(_site(25.0, 3.0))
    again = FeatureCheck.from_arrays(check.arrays(), "x")
    assert again.site is not None and again.site.probe_limit == 3.0 and again.outlier_rows.shape == (3, 1)
    assert "outlier_rows" not in check.arrays(scoring_only=True)  # an export carries what scoring needs
    damaged = {k: v for k, v in check.arrays().items() if k != "site_probe_limit"}
    with pytest.raises(PneumoError, match="lacks site_probe_limit"):
        FeatureCheck.from_arrays(damaged, "x")
    with pytest.raises(PneumoError, match="shapes"):
        FeatureCheck.from_arrays(check.arrays() | {"outlier_rows": np.ones((3, 2), dtype=np.float32)}, "x")
