"""`load_model`: one rule for which backend answers, the input check attached, and the mistakes it refuses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pneumo.errors import PneumoError
from pneumo.inference.loading import bundled_model_dir, load_model
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.torch_backend import TorchModel
from pneumo.models.checkpoint import copy_checkpoint, read_meta, write_meta


def test_the_bundled_model_answers_through_its_export_and_torch_only_when_asked() -> None:
    auto, torch_model = load_model(), load_model(backend="torch")
    assert isinstance(auto, OnnxModel) and isinstance(torch_model, TorchModel)
    assert auto.feature_check is not None and torch_model.feature_check is not None  # the check is on by default
    assert load_model(checks=False, backend="torch").feature_check is None
    assert isinstance(load_model(bundled_model_dir() / "pneumo.onnx"), OnnxModel)
    assert load_model(auto) is not None and load_model(auto).meta == auto.meta  # a model object is used as it is
    again = load_model(auto, backend="torch")  # what export, Grad-CAM and calibrate ask of a model loaded the fast way
    assert isinstance(again, TorchModel) and again.meta == auto.meta and again.checkpoint == bundled_model_dir()


def test_predicting_with_the_bundled_model_never_imports_torch() -> None:
    code = "import sys, pneumo; m = pneumo.load_model(); print(type(m).__name__, 'torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["OnnxModel", "False", "False"]


def test_the_export_beside_a_checkpoint_is_used_only_for_the_same_metadata(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Same weights but a threshold moved after export (write_meta, as calibrate does): the stale export is not the fast path."""
    folder = copy_checkpoint(bundled_model_dir(), tmp_path / "model")
    for name in ("pneumo.onnx", "pneumo.json"):
        shutil.copy(bundled_model_dir() / name, folder / name)
    assert isinstance(load_model(folder), OnnxModel)  # the checkpoint's own export answers
    write_meta(folder, read_meta(folder).replace(threshold=0.3, threshold_method="site"))
    moved = read_meta(folder)
    assert moved.weights_sha256 == OnnxModel.load(folder / "pneumo.onnx").meta.weights_sha256  # the weights alone would match
    with caplog.at_level("WARNING", logger="pneumo.inference.loading"):
        assert not isinstance(load_model(folder), OnnxModel) and load_model(folder).threshold == 0.3
    assert "other metadata" in caplog.text


def test_mistakes_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(PneumoError, match="is not a pneumo model"):
        load_model(tmp_path)
    with pytest.raises(PneumoError, match="backend must be one of 'auto', 'onnx', 'torch'; got 'gpu' \\(str\\)"):
        load_model(backend="gpu")
    with pytest.raises(PneumoError, match=r"^path must be a run or checkpoint folder, .*; got 123 \(int\)$"):
        load_model(123)  # type: ignore[arg-type]
    with pytest.raises(PneumoError, match="is an ONNX export; this needs the PyTorch checkpoint"):
        load_model(bundled_model_dir() / "pneumo.onnx", backend="torch")
    with pytest.raises(PneumoError, match="loaded from an ONNX export alone"):
        load_model(load_model(bundled_model_dir() / "pneumo.onnx"), backend="torch")
    plain = copy_checkpoint(bundled_model_dir(), tmp_path / "plain")  # a checkpoint without an export of its own
    with pytest.raises(PneumoError, match="has no export of its own"):
        load_model(plain, backend="onnx")
    assert isinstance(load_model(plain), TorchModel)


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("gpu", "device must be 'cpu', 'cuda' or 'cuda:N' (a str or torch.device); got 'gpu' (str)"),
        (0, "got 0 (int)"),
        ("cuda:", "got 'cuda:' (str)"),
        ("cuda:99", "device must be 'cpu' or a CUDA GPU that is there"),
    ],
)
def test_a_device_that_is_not_there_is_refused_before_the_model_loads(device: object, fragment: str) -> None:
    """Not PyTorch's AssertionError ("Torch not compiled with CUDA enabled") from inside the weights' move."""
    with pytest.raises(PneumoError) as err:
        load_model(backend="torch", device=device)  # type: ignore[arg-type]
    assert fragment in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so() -> None:
    with pytest.raises(PneumoError, match=r"device must be 'cpu' or a CUDA GPU that is there \(this machine has no CUDA GPU\); got 'cuda'"):
        load_model(backend="torch", device="cuda")
    assert load_model(device=torch.device("cpu")).image_size > 0  # a torch.device is a device too
