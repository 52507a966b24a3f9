"""pneumo.export and pneumo.runtime: ONNX export checked against PyTorch, and prediction without torch."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.export import onnx as export
from pneumo.export.onnx import export_onnx
from pneumo.inference.checks import warning_kind
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import load_model, predict
from pneumo.inference.torch_backend import TorchModel
from pneumo.models import create_model
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CheckpointMeta
from pneumo.tasks import PATHOGEN_CLASSES
from tests.conftest import SAMPLES, pick


@pytest.fixture(scope="module")
def bundled() -> TorchModel:
    return load_model(None)


@pytest.fixture(scope="module")
def files(shared_data: Path) -> list[Path]:
    return pick("NORMAL", 8, offset=1) + pick("PNEUMONIA", 8, offset=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, bundled: TorchModel, files: list[Path]) -> tuple[Path, dict]:
    images = np.stack([load_image(f, bundled.image_size) for f in files])
    out = tmp_path_factory.mktemp("export") / "pneumo.onnx"
    return out, export_onnx(bundled, out, check_images=images)


def test_export_agrees_with_pytorch_and_says_how_to_use_it(exported: tuple[Path, dict], bundled: TorchModel) -> None:
    out, result = exported
    assert result == {"path": str(out), "max_abs_diff": pytest.approx(0, abs=1e-4), "n_images": 16}
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["onnx_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    for key in ("architecture", "classes", "image_size", "threshold", "task"):
        assert info[key] == getattr(bundled.meta, key)
    assert info["checkpoint"]["weights_sha256"] == bundled.meta.weights_sha256
    assert sorted(p.name for p in out.parent.iterdir()) == ["pneumo.json", "pneumo.onnx"]  # no staging left behind


def test_runtime_predicts_what_torch_predicts(exported: tuple[Path, dict], bundled: TorchModel, files: list[Path]) -> None:
    ours = predict(files, exported[0], batch_size=5)
    theirs = predict(files, model=bundled)
    assert len(ours) == len(theirs) == 16
    for a, b in zip(ours, theirs):
        assert (a.path, a.label, a.threshold) == (b.path, b.label, b.threshold)
        assert a.probability == pytest.approx(b.probability, abs=1e-4)
        assert a.class_probabilities == pytest.approx(b.class_probabilities, abs=1e-4)
        assert a.to_dict().keys() == b.to_dict().keys()


def test_the_export_carries_the_feature_check(exported: tuple[Path, dict], bundled: TorchModel, files: list[Path]) -> None:
    model = OnnxModel.load(exported[0])
    checked = bundled.with_feature_check()
    assert model.feature_check.arrays().keys() == checked.feature_check.arrays().keys()
    images = np.stack([load_image(f, 224) for f in files])
    _, ours = model.probabilities_and_scores(images)
    _, theirs = checked.probabilities_and_scores(images)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_both_backends_abstain_on_the_same_films(exported: tuple[Path, dict], bundled: TorchModel, files: list[Path], shared_data: Path) -> None:
    adult = sorted((shared_data / "ood" / "adult_other_hospitals").iterdir())[::4]  # 31 adult films
    paths = [*adult, *files, SAMPLES / "dicom" / "cr_chest_pa_monochrome1.dcm"]
    onnx_results = predict(paths, model=exported[0])
    torch_results = predict(paths, model=bundled)
    assert [r.abstain for r in onnx_results] == [r.abstain for r in torch_results]
    assert [[warning_kind(w) for w in r.warnings] for r in onnx_results] == [[warning_kind(w) for w in r.warnings] for r in torch_results]
    assert sum(r.abstain for r in onnx_results[: len(adult)]) >= 0.8 * len(adult)
    assert sum(r.abstain for r in onnx_results[len(adult) : -1]) <= 1  # children's films are judged


def test_dynamic_batch(exported: tuple[Path, dict], bundled: TorchModel, files: list[Path]) -> None:
    model = OnnxModel.load(exported[0])
    images = np.stack([load_image(f, model.image_size) for f in files[:7]])
    for batch in (images[:1], images):
        np.testing.assert_allclose(model.class_probabilities(batch), bundled.class_probabilities(batch), atol=1e-4)
    np.testing.assert_allclose(model.pneumonia_probability(images), bundled.pneumonia_probability(images), atol=1e-4)
    assert model.class_probabilities(images[:0]).shape == (0, 2)
    assert model.threshold == bundled.threshold and model.image_size == 224 and model.meta.task == "binary"


def test_runtime_never_imports_torch(exported: tuple[Path, dict], files: list[Path]) -> None:
    code = (
        "import sys; from pneumo.inference.predict import predict; "
        f"r = predict([{str(files[0])!r}], {str(exported[0])!r}); "
        "assert 0 <= r[0].probability <= 1; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_damaged_export_is_a_user_error(exported: tuple[Path, dict], tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    data = exported[0].read_bytes()
    onnx.write_bytes(data[: len(data) // 2])
    shutil.copy(exported[0].with_suffix(".json"), tmp_path / "m.json")
    with pytest.raises(PneumoError, match="damaged.*export the model again"):
        OnnxModel.load(onnx)
    info = json.loads((tmp_path / "m.json").read_text())
    del info["onnx_sha256"]  # without the checksum, onnxruntime's own refusal becomes the message
    (tmp_path / "m.json").write_text(json.dumps(info))
    with pytest.raises(PneumoError, match="onnxruntime cannot load .*damaged"):
        OnnxModel.load(onnx)
    (tmp_path / "m.json").unlink()
    with pytest.raises(PneumoError, match=r"m\.json not found"):
        OnnxModel.load(onnx)


def test_a_failed_parity_check_writes_nothing(bundled: TorchModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(PneumoError, match="differs from PyTorch"):
        export_onnx(bundled, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PneumoError, match=r"\.onnx file path"):
        export_onnx(bundled, tmp_path / "m.pt")


def test_a_pathogen_seed_cnn_exports_its_softmax(tmp_path: Path, files: list[Path]) -> None:
    classes = list(PATHOGEN_CLASSES)
    meta = {"architecture": "seed_cnn", "task": "pathogen", "classes": classes, "num_outputs": 3,
            "image_size": 180, "mean": 0.0, "std": 1.0, "threshold": 0.5}
    ckpt = save_checkpoint(tmp_path / "ckpt", create_model("seed_cnn", num_outputs=3, image_size=180), CheckpointMeta(**meta))
    result = export_onnx(ckpt, tmp_path / "seed.onnx", opset=18)  # no images given: seeded synthetic ones
    assert result["n_images"] == 8 and result["max_abs_diff"] <= 1e-4
    model = OnnxModel.load(tmp_path / "seed.json")
    probs = model.class_probabilities(np.stack([load_image(f, 180) for f in files[:3]]))
    assert probs.shape == (3, 3) and model.classes == classes
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
