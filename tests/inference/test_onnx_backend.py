"""pneumo.inference.onnx_backend: the export shipped in the package (src/pneumo/weights/pneumo.onnx, an
int8 graph), loaded as it is and judged against the PyTorch checkpoint it was made from by its
verdicts, and a float export of the same checkpoint checked against it to float precision, on real films.

`tests/deploy/test_onnx.py` covers exporting, edited or forged JSON, hand-built graphs that do not fit,
and a fresh export's agreement with PyTorch; here: the shipped pair itself, how `load` finds its files,
the arrays' encoding, and the backend's methods (features, scores, batches, refusals of bad images).
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.inference.loading import BUNDLED_ONNX, bundled_model_dir
from pneumo.inference.onnx_backend import ENCODING, OnnxModel, encode_arrays
from pneumo.inference.torch_backend import TorchModel, feature_rows
from tests.conftest import BUNDLED_SIZE, pick

pytestmark = pytest.mark.slow  # whole-network passes over many cases: the full suite runs them, the fast loop leaves them out

SHIPPED = bundled_model_dir() / BUNDLED_ONNX


@pytest.fixture(scope="module")
def onnx_model() -> OnnxModel:
    return OnnxModel.load(SHIPPED)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """A float export of the bundled checkpoint: the backend's own contract is float precision."""
    from pneumo.deploy.onnx import export

    return OnnxModel.load(export(None, out=tmp_path_factory.mktemp("float") / "model.onnx").path)


@pytest.fixture(scope="module")
def torch_model() -> TorchModel:
    return TorchModel.load(bundled_model_dir()).with_feature_check()


@pytest.fixture(scope="module")
def films(shared_data: Path) -> np.ndarray:
    """Three NORMAL then three PNEUMONIA real films at the bundled size, none of them the ones test_onnx picks."""
    return np.stack([load_image(f, BUNDLED_SIZE) for f in pick("NORMAL", 3, offset=7) + pick("PNEUMONIA", 3, offset=7)])


@pytest.fixture(scope="module")
def torch_pass(torch_model: TorchModel, films: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch checkpoint's probabilities and feature rows for the films: one pass, shared."""
    return feature_rows(torch_model, films)


def test_the_shipped_export_describes_the_bundled_checkpoint(onnx_model: OnnxModel, torch_model: TorchModel) -> None:
    assert onnx_model.meta == torch_model.meta  # the very same metadata record, checksum included
    assert (onnx_model.image_size, onnx_model.classes, onnx_model.threshold) == (
        BUNDLED_SIZE,
        ["NORMAL", "PNEUMONIA"],
        torch_model.threshold,
    )
    assert onnx_model.checkpoint is None  # an export alone knows no checkpoint folder (load_model sets it when it finds one)
    assert onnx_model.with_feature_check() is onnx_model  # its check came with the JSON
    assert onnx_model.feature_check.width == torch_model.check.width


def test_the_shipped_int8_export_keeps_its_checkpoints_verdicts_on_real_films(
    onnx_model: OnnxModel, torch_model: TorchModel, torch_pass: tuple, films: np.ndarray
) -> None:
    torch_probs, _ = torch_pass
    probs, scores = onnx_model.probabilities_and_scores(films)
    quantization = onnx_model.export["quantization"]
    assert quantization["weights"].startswith("int8") and quantization["val_same_verdict"] >= 0.995
    assert ((probs[:, 1] >= onnx_model.threshold) == (torch_probs[:, 1] >= torch_model.threshold)).all()
    assert np.abs(probs - torch_probs).max() <= quantization["val_max_abs_diff"] + 0.02
    assert not onnx_model.feature_check.flags(scores).any()  # children's films pass its own check, fitted on its own rows


def test_a_float_export_agrees_with_its_checkpoint_on_real_films(float_model: OnnxModel, torch_pass: tuple, films: np.ndarray) -> None:
    onnx_model = float_model
    torch_probs, _ = torch_pass
    probs = onnx_model.class_probabilities(films)
    assert probs.shape == (6, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, torch_probs, atol=1e-4)
    np.testing.assert_allclose(onnx_model.pneumonia_probability(films), 1 - torch_probs[:, 0], atol=1e-4)
    assert probs[3:, 1].min() > probs[:3, 1].max()  # training films of each class, read as their folders say


def test_features_and_scores_agree_with_the_checkpoints(
    float_model: OnnxModel, torch_model: TorchModel, torch_pass: tuple, films: np.ndarray
) -> None:
    onnx_model = float_model
    torch_probs, torch_rows = torch_pass
    probs, rows = onnx_model.class_probabilities_and_features(films)
    assert rows.dtype == np.float64 and rows.shape == torch_rows.shape and rows.shape[1] >= onnx_model.feature_check.width
    np.testing.assert_allclose(probs, torch_probs, atol=1e-4)
    np.testing.assert_allclose(rows, torch_rows, rtol=1e-3, atol=1e-3)
    probs2, scores = onnx_model.probabilities_and_scores(films)
    np.testing.assert_array_equal(probs2, probs)  # one pass gives both
    np.testing.assert_allclose(scores, torch_model.check.scores(torch_rows), rtol=1e-3, atol=1e-2)
    assert not onnx_model.feature_check.flags(scores).any()  # children's films pass the model's own check


def test_the_batch_size_changes_nothing(onnx_model: OnnxModel, films: np.ndarray) -> None:
    whole = onnx_model.class_probabilities_and_features(films, batch_size=256)
    for batch_size in (1, 4):
        parts = onnx_model.class_probabilities_and_features(films, batch_size=batch_size)
        np.testing.assert_allclose(parts[0], whole[0], atol=1e-6)
        np.testing.assert_allclose(parts[1], whole[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, BUNDLED_SIZE + 20, BUNDLED_SIZE + 20), np.uint8),
        np.zeros((2, BUNDLED_SIZE, BUNDLED_SIZE), np.float32),
        np.zeros((BUNDLED_SIZE, BUNDLED_SIZE), np.uint8),
        np.zeros((1, 1, BUNDLED_SIZE, BUNDLED_SIZE), np.uint8),
    ],
    ids=["wrong size", "floats", "no batch axis", "channel axis"],
)
def test_images_that_are_not_uint8_at_its_size_are_refused_before_the_graph(onnx_model: OnnxModel, bad: np.ndarray) -> None:
    for method in (onnx_model.class_probabilities, onnx_model.probabilities_and_scores, onnx_model.class_probabilities_and_features):
        with pytest.raises(PneumoError, match=rf"needs uint8 images \[N, {BUNDLED_SIZE}, {BUNDLED_SIZE}\]"):
            method(bad)


@pytest.mark.parametrize("missing, given", [(".json", ".onnx"), (".json", ".json"), (".onnx", ".json"), (".onnx", "")])
def test_an_export_without_both_files_is_refused_with_how_to_make_them(tmp_path: Path, missing: str, given: str) -> None:
    for suffix in (".onnx", ".json"):
        if suffix != missing:
            shutil.copy(SHIPPED.with_suffix(suffix), tmp_path / f"m{suffix}")
    with pytest.raises(
        PneumoError,
        match=rf"m\{missing} not found: an exported model is a \.onnx file with its \.json beside it; make both with `pneumo export`",
    ):
        OnnxModel.load(tmp_path / f"m{given}")


def test_an_export_is_found_by_either_file_its_stem_or_a_home_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, films: np.ndarray
) -> None:
    for suffix in (".onnx", ".json"):
        (tmp_path / f"m{suffix}").symlink_to(SHIPPED.with_suffix(suffix))
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = OnnxModel.load(tmp_path / "m.onnx").class_probabilities(films[:1])
    for name in (tmp_path / "m.json", tmp_path / "m", "~/m.onnx"):
        model = OnnxModel.load(name)
        np.testing.assert_array_equal(model.class_probabilities(films[:1]), expected)


def test_a_folder_is_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="not found: an exported model is a .onnx file"):
        OnnxModel.load(bundled_model_dir())


def test_encode_arrays_is_little_endian_float32_in_base64() -> None:
    arrays = {"mean": np.array([1.5, -2.0, 3.25]), "precision": np.eye(2, dtype=np.float64) * 7, "threshold": np.array(4.0)}
    encoded = encode_arrays(arrays)
    assert encoded["encoding"] == ENCODING and set(encoded["arrays"]) == set(arrays)
    for name, value in arrays.items():
        entry = encoded["arrays"][name]
        assert entry["shape"] == list(value.shape)
        back = np.frombuffer(base64.b64decode(entry["data"], validate=True), dtype="<f4").reshape(entry["shape"])
        np.testing.assert_array_equal(back, value.astype(np.float32))


def test_the_check_travels_through_its_encoding(float_model: OnnxModel, torch_model: TorchModel) -> None:
    """What a float export's JSON carries is the checkpoint's check, to float32, without the outlier rows scoring does not need."""
    shipped = float_model.feature_check.arrays()
    own = torch_model.check.arrays(scoring_only=True)
    assert shipped.keys() == own.keys() and "outlier_rows" not in shipped
    for name in own:
        np.testing.assert_allclose(shipped[name], own[name], rtol=1e-6, atol=1e-6)


def test_an_empty_batch_gives_empty_results(onnx_model: OnnxModel, films: np.ndarray) -> None:
    probs, rows = onnx_model.class_probabilities_and_features(films[:0])
    assert probs.shape == (0, 2) and rows.shape[0] == 0
    _, scores = onnx_model.probabilities_and_scores(films[:0])
    assert scores is not None and scores.shape == (0, 4)
