from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumo.data.layout import discover
from pneumo.data.preprocess import load_image
from pneumo.evaluation.robustness import (
    FAULTS,
    SHIFTS,
    apply_fault,
    apply_shift,
    fault_copies,
    prevalence_accuracy,
    shift_report,
    shifted_probabilities,
)


@pytest.fixture(scope="module")
def images(small_folder: Path) -> tuple[np.ndarray, np.ndarray]:
    records = discover(small_folder).split(None)
    return np.stack([load_image(r.path, 64) for r in records]), np.array([r.target("binary") for r in records])


@pytest.mark.parametrize("name", list(SHIFTS))
def test_every_shift_changes_real_images_but_keeps_their_form(images: tuple[np.ndarray, np.ndarray], name: str) -> None:
    x, _ = images
    shifted = apply_shift(x, name)
    assert shifted.shape == x.shape and shifted.dtype == np.uint8
    assert np.abs(shifted.astype(int) - x).mean() > 1.0
    assert np.array_equal(shifted, apply_shift(x, name))  # deterministic


def test_shift_directions(images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = images
    assert apply_shift(x, "darker (gamma 1.5)").mean() < x.mean() < apply_shift(x, "brighter (gamma 0.67)").mean()
    assert apply_shift(x, "low contrast (x0.7)").std() < x.std() < apply_shift(x, "high contrast (x1.3)").std()
    blurred = apply_shift(x, "blur (sigma 1% of side)").astype(float)
    assert np.abs(np.diff(blurred, axis=2)).mean() < np.abs(np.diff(x.astype(float), axis=2)).mean()


def test_framing_shifts_move_the_frame(images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = images
    side = x.shape[-1]
    looser = apply_shift(x, "looser (15% black margin)")
    assert looser[:, :2, :].max() == 0 and looser[:, :, -2:].max() == 0  # a black frame around a shrunk film
    marked = apply_shift(x, "side marker (upper-left corner)")
    inset, m = max(1, round(0.03 * side)), max(2, round(0.08 * side))
    corner = slice(inset, inset + m)
    assert (marked[:, corner, corner] == 255).all() and np.array_equal(marked[:, side // 2 :, :], x[:, side // 2 :, :])
    # a bright line at row 40 of 64: with the top 10 rows cut, the rest is stretched over 64 rows
    line = np.zeros((1, 64, 64), dtype=np.uint8)
    line[:, 40, :] = 255
    assert abs(int(apply_shift(line, "shoulders cut (top 15%)")[0, :, 32].argmax()) - (40 - 10) * 64 / 54) <= 1
    assert abs(int(apply_shift(line, "diaphragm cut (bottom 15%)")[0, :, 32].argmax()) - 40 * 64 / 54) <= 1
    assert abs(int(apply_shift(line, "wider film (top and bottom 12% each)")[0, :, 32].argmax()) - (40 - 8) * 64 / 48) <= 1


def test_report_for_a_predictor_that_reads_brightness(images: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = images
    # a "model" that calls bright images sick: brightening raises its recall and lowers specificity
    predict = lambda imgs: imgs.reshape(len(imgs), -1).mean(1) / 255  # noqa: E731
    threshold = float(np.median(predict(x)))
    report = shift_report(shifted_probabilities(predict, x), y, threshold)
    assert set(report) == {"none", *SHIFTS}
    assert report["brighter (+0.1)"]["recall"] >= report["none"]["recall"]
    assert report["brighter (+0.1)"]["specificity"] <= report["none"]["specificity"]
    none = report["none"]
    assert none["accuracy_at_prevalence"] == pytest.approx(prevalence_accuracy(none["recall"], none["specificity"], 0.625))


def test_prevalence_accuracy_by_hand() -> None:
    assert prevalence_accuracy(0.9, 0.6, 0.625) == pytest.approx(0.625 * 0.9 + 0.375 * 0.6)


def test_given_unshifted_predictions_are_used_not_recomputed(images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = images
    calls = []
    predict = lambda imgs: calls.append(1) or imgs.reshape(len(imgs), -1).mean(1) / 255  # noqa: E731
    known = predict(x)
    calls.clear()
    probs = shifted_probabilities(predict, x, unshifted=known)
    assert len(calls) == len(SHIFTS) and probs["none"] is known
    assert np.allclose(shifted_probabilities(predict, x)["none"], known)


def test_faults_turn_invert_and_flip_films_and_each_copy_takes_one(images: tuple[np.ndarray, np.ndarray]) -> None:
    x = images[0]
    assert (apply_fault(x, "inverted (negative)") == 255 - x).all()
    turned = apply_fault(x, "turned 90° (clockwise)")
    assert (
        turned.flags.c_contiguous and (turned[:, 0, :] == x[:, ::-1, 0]).all()
    )  # the first row of the turned film is the film's left column, bottom up
    assert (apply_fault(turned, "turned 90° (anticlockwise)") == x).all()
    assert (apply_fault(x, "upside down (turned 180°)") == x[:, ::-1, ::-1]).all()
    assert (apply_fault(x, "flipped top to bottom") == x[:, ::-1]).all()
    copies = fault_copies(x, seed=0)
    assert copies.shape == x.shape and copies.dtype == np.uint8
    as_each = {name: apply_fault(x, name) for name in FAULTS}
    assert all(any((c == f[i]).all() for f in as_each.values()) and not (c == x[i]).all() for i, c in enumerate(copies))
    assert (fault_copies(x, seed=0) == copies).all()
