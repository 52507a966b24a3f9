"""pneumo.metrics: confusion counts by hand, AUCs against scikit-learn and pair counting, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from pneumo.errors import PneumoError
from pneumo.evaluation.metrics import (
    MAX_BOOT,
    SUMMARY_METRICS,
    binary_metrics,
    bootstrap_intervals,
    check_n_boot,
    multiclass_metrics,
    summary_metrics,
)

# Ten cases; at threshold 0.5 the predictions are 1 where p >= 0.5:
#   y:    1    1    1    1    0    0    0    0    0     1
#   p:  0.9  0.8  0.6  0.3  0.7  0.2  0.1  0.4  0.55  0.5
#  pred:  1    1    1    0    1    0    0    0    1     1
# TP = 4 (cases 0, 1, 2, 9), FN = 1 (case 3), FP = 2 (cases 4, 8), TN = 3 (cases 5, 6, 7).
Y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
P = [0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.55, 0.5]


def _pair_auc(y, p) -> float:
    """ROC AUC as the share of (positive, negative) pairs ranked the right way, ties counting half."""
    y, p = np.asarray(y), np.asarray(p)
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A moderately good classifier: labels ~ Bernoulli(0.6), scores overlap between classes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    p = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(0, 1.5, n))))
    return y, p


def test_binary_metrics_by_hand() -> None:
    m = binary_metrics(Y, P, threshold=0.5)
    assert m["confusion_matrix"] == [[3, 2], [1, 4]]
    assert m["n"] == 10 and m["positives"] == 5 and m["threshold"] == 0.5
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(4 / 6)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["specificity"] == pytest.approx(3 / 5)
    # F1 = 2 (2/3)(4/5) / (2/3 + 4/5) = 8/11
    assert m["f1"] == pytest.approx(8 / 11)
    # 19 of the 25 positive/negative pairs are ordered correctly
    assert m["roc_auc"] == pytest.approx(19 / 25)
    expected_loss = -np.mean([math.log(p) if y else math.log(1 - p) for y, p in zip(Y, P)])
    assert m["loss"] == pytest.approx(expected_loss)


def test_threshold_moves_the_confusion_matrix() -> None:
    # at 0.65 only 0.9, 0.8 (positives) and 0.7 (a negative) are called positive
    m = binary_metrics(Y, P, threshold=0.65)
    assert m["confusion_matrix"] == [[4, 1], [3, 2]]
    assert m["roc_auc"] == binary_metrics(Y, P, threshold=0.5)["roc_auc"]  # AUC does not depend on it


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_and_pair_counting(seed: int) -> None:
    y, p = _data(200, seed)
    p = np.round(p, 2)  # make ties
    m = binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["roc_auc"] == pytest.approx(_pair_auc(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))


def test_single_class_gives_nan_auc() -> None:
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert m["specificity"] != m["specificity"]  # no negatives: NaN, not 0
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[0, 0], [1, 2]]


def test_no_positive_predictions() -> None:
    m = binary_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], threshold=0.9)
    assert m["f1"] == 0.0 and m["recall"] == 0.0
    assert math.isnan(m["precision"])
    assert m["specificity"] == 1.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=1, max_size=80),
    st.floats(0.0, 1.0),
)
def test_fast_summary_metrics_equal_scikit_learns(pairs: list[tuple[int, int]], threshold: float) -> None:
    """The bootstrap's numpy metrics give binary_metrics' values, ties and single classes included."""
    y = np.array([a for a, _ in pairs])
    p = np.array([b / 20 for _, b in pairs])  # coarse scores: many ties
    fast, reference = summary_metrics(y, p, threshold), binary_metrics(y, p, threshold)
    for k in SUMMARY_METRICS:
        assert fast[k] == pytest.approx(reference[k], abs=1e-12, nan_ok=True), k


# --- bootstrap ---------------------------------------------------------------------------------------


def _width(interval: list[float]) -> float:
    return interval[1] - interval[0]


def test_bootstrap_brackets_the_estimate() -> None:
    y, p = _data(150, 0)
    point = binary_metrics(y, p, 0.5)
    ci = bootstrap_intervals(y, p, 0.5, n_boot=200, seed=0)
    assert set(ci) == set(SUMMARY_METRICS)
    for k in SUMMARY_METRICS:
        lo, hi = ci[k]
        assert lo <= point[k] <= hi, k
        assert lo < hi, k
    # same seed, same intervals
    assert bootstrap_intervals(y, p, 0.5, n_boot=200, seed=0) == ci


def test_bootstrap_narrows_with_more_data() -> None:
    small = bootstrap_intervals(*_data(100, 1), 0.5, n_boot=200, seed=0)
    large = bootstrap_intervals(*_data(1000, 2), 0.5, n_boot=200, seed=0)
    for k in ("accuracy", "roc_auc", "recall", "specificity"):
        # the width shrinks like 1/sqrt(n): about 3x here; demand at least 2x
        assert _width(large[k]) < 0.5 * _width(small[k]), k


def test_bootstrap_resamples_whole_patients() -> None:
    y, p = _data(80, 3)
    # every image appears five times, all under one patient id
    y5, p5 = np.repeat(y, 5), np.repeat(p, 5)
    groups = np.repeat([f"patient{i}" for i in range(len(y))], 5)
    naive = bootstrap_intervals(y5, p5, 0.5, n_boot=200, seed=0)
    clustered = bootstrap_intervals(y5, p5, 0.5, groups=groups, n_boot=200, seed=0)
    single = bootstrap_intervals(y, p, 0.5, n_boot=200, seed=0)
    for k in ("accuracy", "roc_auc"):
        # copies are not evidence: the naive interval is ~sqrt(5) too narrow
        assert _width(clustered[k]) > 1.5 * _width(naive[k]), k
        # ...and the clustered one is about as wide as with each child counted once
        assert 0.6 < _width(clustered[k]) / _width(single[k]) < 1.6, k


def test_bootstrap_group_order_does_not_matter() -> None:
    y, p = _data(60, 4)
    groups = np.array([f"g{i // 3}" for i in range(60)])
    shuffled = np.random.default_rng(0).permutation(60)
    a = bootstrap_intervals(y, p, 0.5, groups=groups, n_boot=100, seed=0)
    b = bootstrap_intervals(y[shuffled], p[shuffled], 0.5, groups=groups[shuffled], n_boot=100, seed=0)
    assert a["accuracy"] == pytest.approx(b["accuracy"])


# --- Youden -----------------------------------------------------------------------------------------


# --- multiclass -----------------------------------------------------------------------------------------


def test_multiclass_by_hand() -> None:
    classes = ["normal", "bacteria", "virus"]
    y = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 1, 1, 2, 2, 2, 0, 2]
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    m = multiclass_metrics(y, probs, classes)
    # recall: class 0 2/3 (case 2 missed), class 1 1/2 (case 4 missed), class 2 3/4 (case 7 missed)
    assert [m["per_class"][c]["recall"] for c in classes] == pytest.approx([2 / 3, 1 / 2, 3 / 4])
    # precision: predicted 0 at {0,1,7} -> 2/3, 1 at {2,3} -> 1/2, 2 at {4,5,6,8} -> 3/4
    assert [m["per_class"][c]["precision"] for c in classes] == pytest.approx([2 / 3, 1 / 2, 3 / 4])
    assert [m["per_class"][c]["support"] for c in classes] == [3, 2, 4]
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["macro"]["recall"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    # pneumonia cases 3-8, bacterial or viral by the larger of the two: 3, 5, 6, 8 right; 4 and 7 (a tie, read as bacterial) wrong
    assert m["bacteria_vs_virus_accuracy"] == pytest.approx(4 / 6)
    for i, c in enumerate(classes):
        assert m["per_class"][c]["roc_auc"] == pytest.approx(roc_auc_score(np.asarray(y) == i, probs[:, i]))


def test_multiclass_absent_class() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    m = multiclass_metrics([0, 1, 0], probs, ["normal", "bacteria", "virus"])
    virus = m["per_class"]["virus"]
    assert virus["support"] == 0 and math.isnan(virus["roc_auc"]) and math.isnan(virus["recall"])
    assert m["accuracy"] == 1.0
    assert m["macro"]["recall"] == pytest.approx(1.0)  # NaN of the absent class is left out


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_probability_is_an_error_never_a_normal_verdict(bad: float) -> None:
    from pneumo.errors import PneumoError

    p = [*P[:3], bad, *P[4:]]
    for call in (
        lambda: binary_metrics(Y, p, 0.5),
        lambda: summary_metrics(np.array(Y), np.array(p), 0.5),
        lambda: bootstrap_intervals(Y, p, 0.5, n_boot=10),
    ):
        with pytest.raises(PneumoError, match=r"non-finite probability for film 4 of 10"):
            call()
    probs = np.array([[0.7, 0.2, 0.1], [bad, 0.5, 0.5]])
    with pytest.raises(PneumoError, match="non-finite probability for film 2 of 2"):
        multiclass_metrics([0, 1], probs, ["NORMAL", "BACTERIA", "VIRUS"])


def test_metrics_report_names_the_film_with_a_non_finite_probability() -> None:
    from pathlib import Path

    from pneumo.data.layout import Record
    from pneumo.errors import PneumoError
    from pneumo.evaluation.report import metrics_report
    from pneumo.tasks import BINARY

    records = [Record(Path(f"film{i}.jpeg"), "PNEUMONIA" if y else "NORMAL", None, f"p{i}") for i, y in enumerate(Y)]
    probs = np.c_[1 - np.array(P), P]
    probs[6] = [np.nan, np.nan]
    with pytest.raises(PneumoError, match=r"non-finite probability for film6\.jpeg \(\[nan, nan\]\); the model or the input is damaged"):
        metrics_report(records, probs, BINARY, 0.5, n_boot=10, seed=0)


@pytest.mark.parametrize("value", [-1, True, 1.5, float("nan"), "100", MAX_BOOT + 1, 2**63], ids=repr)
def test_a_bootstrap_count_that_is_not_one_is_refused_naming_it(value: object) -> None:
    """2**63 resamples would be a run that never ends; a float or a bool is a slip."""
    with pytest.raises(PneumoError, match=r"^n_boot must be a whole number from 0 to 1000000; got "):
        check_n_boot(value)
    assert check_n_boot(np.int64(0)) == 0 and check_n_boot(MAX_BOOT) == MAX_BOOT
