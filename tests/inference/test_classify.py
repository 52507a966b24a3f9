"""pneumo.inference.classify: the one loop from files (or decoded images) to verdicts.

Real films run through the bundled model's ONNX export (the fast backend); the loop's own rules
(batching, skipping, abstaining, refusing damaged numbers) run with small stand-in models whose
probabilities are set by the test, on real files at 64 px.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumo.data.pixels import ImageInfo
from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.inference.base import Model, PredictionBatch
from pneumo.inference.checks import FeatureCheck
from pneumo.inference.classify import classify, classify_images
from pneumo.inference.loading import BUNDLED_ONNX, bundled_model_dir
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.models.meta import CheckpointMeta
from tests.conftest import SAMPLES, pick


class MeanModel(Model):
    """P(pneumonia) = mean pixel / 255, so a test knows every answer; records the batch sizes it is given."""

    def __init__(self, threshold: float = 0.5, size: int = 64, check: FeatureCheck | None = None) -> None:
        self.meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], 1, size, 0.0, 1.0, threshold)
        self.check = check
        self.batches: list[int] = []

    @property
    def feature_check(self) -> FeatureCheck | None:
        return self.check

    def class_probabilities(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        self.batches.append(len(images))
        p = np.asarray(images, dtype=np.float64).mean(axis=(1, 2)) / 255
        return np.stack([1 - p, p], axis=1).astype(np.float32)

    def probabilities_and_scores(
        self, images: np.ndarray, batch_size: int = 256, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        probs = self.class_probabilities(images, batch_size, progress)
        if self.check is None:
            return probs, None
        brightness = probs[:, 1:2].astype(np.float64)  # the "feature": a film's brightness, one number
        return probs, self.check.scores(brightness)


class FixedModel(MeanModel):
    """Returns the given rows whatever the images: for damaged outputs."""

    def __init__(self, rows: np.ndarray) -> None:
        super().__init__()
        self.rows = np.asarray(rows, dtype=np.float32)

    def class_probabilities(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        return self.rows


@pytest.fixture(scope="module")
def films(shared_data: Path) -> list[Path]:
    return pick("NORMAL", 3, offset=2) + pick("PNEUMONIA", 3, offset=2)


@pytest.fixture(scope="module")
def onnx_model() -> OnnxModel:
    return OnnxModel.load(bundled_model_dir() / BUNDLED_ONNX)


def test_real_films_get_the_models_probabilities_and_labels_at_its_threshold(films: list[Path], onnx_model: OnnxModel) -> None:
    results = classify(films, onnx_model, abstain=False)
    assert isinstance(results, PredictionBatch) and results.skipped == []
    assert [r.path for r in results] == [str(f) for f in films]
    images = np.stack([load_image(f, onnx_model.image_size) for f in films])
    expected = onnx_model.class_probabilities(images)
    for r, row in zip(results, expected):
        assert r.class_probabilities == pytest.approx(dict(zip(onnx_model.classes, row.tolist())), abs=1e-6)
        assert r.probability == pytest.approx(1 - r.class_probabilities["NORMAL"], abs=1e-6)
        assert r.threshold == onnx_model.threshold
        assert r.label == ("PNEUMONIA" if r.probability >= r.threshold else "NORMAL")
    normal, pneumonia = [r.probability for r in results[:3]], [r.probability for r in results[3:]]
    assert np.mean(pneumonia) > np.mean(normal)  # the bundled model reads these training films as their folders say


def test_the_answer_does_not_depend_on_the_batch(films: list[Path], onnx_model: OnnxModel) -> None:
    whole = classify(films, onnx_model, batch_size=32)
    one_by_one = classify(films, onnx_model, batch_size=1)
    uneven = classify(films, onnx_model, batch_size=4)
    for a, b, c in zip(whole, one_by_one, uneven):
        assert a.path == b.path == c.path and a.label == b.label == c.label and a.warnings == b.warnings == c.warnings
        assert a.probability == pytest.approx(b.probability, abs=1e-6) == c.probability


def test_files_are_decoded_and_sent_in_batches_of_the_size_asked(films: list[Path]) -> None:
    model = MeanModel()
    results = classify(films[:5], model, batch_size=2)
    assert model.batches == [2, 2, 1] and len(results) == 5
    for f, r in zip(films, results):
        assert r.probability == pytest.approx(load_image(f, 64).mean() / 255, abs=1e-6)  # decoded at the model's size


def test_an_unreadable_file_is_skipped_with_its_reason_and_the_rest_judged(films: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files = [films[0], broken, films[1]]
    results = classify(files, MeanModel(), batch_size=2)
    assert [r.path for r in results] == [str(films[0]), str(films[1])]
    assert len(results.skipped) == 1 and results.skipped[0][0] == str(broken) and results.skipped[0][1]
    with pytest.raises(PneumoError, match=r"--strict stops at the first unreadable file"):
        classify(files, MeanModel(), strict=True)


def test_a_batch_is_read_only_when_its_turn_comes() -> None:
    """At most one batch is held decoded: the next is read after the model has judged the last."""
    events: list[str] = []

    class Recording(MeanModel):
        def class_probabilities(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
            events.append(f"judge {len(images)}")
            return super().class_probabilities(images, batch_size, progress)

    def read(item: int, name: str, size: int) -> tuple[np.ndarray, None]:
        events.append(f"read {name}")
        if item == 1:
            raise PneumoError(f"cannot read {name}")
        return np.full((size, size), item, dtype=np.uint8), None

    results = classify(range(5), Recording(), batch_size=2, names=list("abcde"), read=read)  # type: ignore[arg-type]
    assert events == ["read a", "read b", "judge 1", "read c", "read d", "judge 2", "read e", "judge 1"]
    assert [r.path for r in results] == list("acde") and results.skipped == [("b", "cannot read b")]


def test_no_readable_file_at_all_is_an_error_and_no_file_at_all_is_none(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"bad{i}.png").write_bytes(b"nothing here")
    with pytest.raises(PneumoError, match="none of the 4 files could be read: "):
        classify(sorted(tmp_path.iterdir()), MeanModel(), batch_size=2)
    model = MeanModel()
    empty = classify([], model)
    assert empty == [] and empty.skipped == [] and model.batches == []  # nothing to do is not an error, and no forward pass


def test_a_rule_warning_withholds_the_label_unless_asked(films: list[Path]) -> None:
    """The OT DICOM is not a radiograph: no verdict, its warning as the reason; a plain film is judged."""
    files = [SAMPLES / "dicom" / "not_a_chest_ot.dcm", films[0]]
    held, film = classify(files, MeanModel())
    assert held.abstain and held.label is None and held.abstain_reason == held.warnings[0] and "modality is OT" in held.abstain_reason
    assert not film.abstain and film.label is not None and film.warnings == () and film.abstain_reason is None
    forced = classify(files, MeanModel(), abstain=False)[0]
    assert not forced.abstain and forced.label == ("PNEUMONIA" if forced.probability >= 0.5 else "NORMAL")
    assert forced.warnings == held.warnings and forced.probability == held.probability


def test_the_feature_check_of_the_model_is_applied() -> None:
    """A check that refuses bright films (distance of the brightness from 0.1, limit 0.2): only those abstain."""
    check = FeatureCheck(mean=np.array([0.1]), precision=np.array([[1.0]]), distance_limit=0.2)
    model = MeanModel(threshold=0.5, check=check)
    images = np.stack([np.full((64, 64), v, np.uint8) for v in (20, 40, 200)])
    results = classify_images(images, [None] * 3, ["dark", "dim", "bright"], model)
    assert [r.abstain for r in results] == [False, False, True]
    assert [r.label for r in results] == ["NORMAL", "NORMAL", None]
    assert "unlike the chest X-rays" in results[2].abstain_reason and results[0].warnings == ()
    labelled = classify_images(images, [None] * 3, ["dark", "dim", "bright"], model, abstain=False)
    assert labelled[2].label == "PNEUMONIA" and labelled[2].warnings == results[2].warnings


def test_decoded_images_with_their_infos() -> None:
    """`classify_images`: what a service calls with uploads; an info's rule warnings count, None has none."""
    info = ImageInfo("DICOM", 512, 512, "MONOCHROME2", 0.0, modality="CR", patient_age_years=40.0)
    images = np.stack([np.full((64, 64), 10, np.uint8), np.full((64, 64), 250, np.uint8)])
    results = classify_images(images, [info, None], ["adult.dcm", "upload"], MeanModel())
    assert [r.path for r in results] == ["adult.dcm", "upload"]
    assert results[0].abstain and "40 years old" in results[0].abstain_reason
    assert results[1].label == "PNEUMONIA" and results[1].probability == pytest.approx(250 / 255, abs=1e-6)


@pytest.mark.parametrize("rows", [[[np.nan, np.nan]], [[0.5, np.inf]], [[0.2, 0.8], [np.nan, 0.5]]])
def test_a_non_finite_probability_is_an_error_not_a_label(rows: list) -> None:
    n = len(rows)
    names = [f"film{i}.png" for i in range(n)]
    bad = next(i for i, row in enumerate(rows) if not np.isfinite(row).all())
    for abstain in (True, False):  # even a film that would abstain: NaN never reads NORMAL
        with pytest.raises(PneumoError, match=rf"non-finite probability for film{bad}\.png"):
            classify_images(np.zeros((n, 64, 64), np.uint8), [None] * n, names, FixedModel(np.array(rows)), abstain)


@pytest.mark.parametrize("rows", [np.zeros((1, 2)), np.zeros((3, 2)), np.full((2, 3), 1 / 3), np.zeros((2,))])
def test_probabilities_of_the_wrong_shape_are_a_damaged_model(rows: np.ndarray) -> None:
    with pytest.raises(
        PneumoError, match=r"the model returned probabilities of shape .* for 2 image\(s\) and 2 classes; the model is damaged"
    ):
        classify_images(np.zeros((2, 64, 64), np.uint8), [None, None], ["a", "b"], FixedModel(rows))


def test_a_probability_outside_zero_one_gets_no_label() -> None:
    with pytest.raises(PneumoError, match=r"probability of 1\.5 for odd\.png, outside \[0, 1\]"):
        classify_images(np.zeros((1, 64, 64), np.uint8), [None], ["odd.png"], FixedModel(np.array([[-0.5, 1.5]])))


def test_the_same_file_twice_and_a_copy_are_judged_alike(films: list[Path], tmp_path: Path, onnx_model: OnnxModel) -> None:
    copy = tmp_path / "copy of film.jpeg"
    shutil.copy(films[3], copy)
    a, b, c = classify([films[3], films[3], copy], onnx_model)
    assert a.probability == b.probability == pytest.approx(c.probability, abs=1e-7) and c.path == str(copy)


def test_predictions_carry_the_models_threshold_not_a_default(films: list[Path]) -> None:
    strict, lenient = MeanModel(threshold=0.99), MeanModel(threshold=0.01)
    for r in classify(films[:2], strict):
        assert r.threshold == 0.99 and r.label == "NORMAL"
    for r in classify(films[:2], lenient):
        assert r.threshold == 0.01 and r.label == "PNEUMONIA"
