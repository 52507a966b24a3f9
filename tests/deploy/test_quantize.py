"""`pneumo export --int8`: an int8 graph judged by its verdicts, its input check fitted on its own features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.evaluation.robustness import SHIFTS
from pneumo.deploy import quantize
from pneumo.deploy.onnx import export
from pneumo.inference.loading import load_model
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import predict

pytestmark = pytest.mark.slow  # quantizes or fits whole models: the full suite runs them, the fast loop leaves them out


@pytest.fixture(scope="module")
def int8(small_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The bundled model's int8 export, calibrated and judged on a small copy of its data (its recipe's split of it)."""
    out = tmp_path_factory.mktemp("int8") / "model.onnx"
    result = export(None, out=out, int8=True, data=small_folder)
    assert result.path == out and result.int8 is not None and result.max_abs_diff is None
    return out, result.int8


def test_the_int8_graph_keeps_the_verdicts_and_says_what_it_measured(int8: tuple[Path, dict], small_folder: Path) -> None:
    out, result = int8
    assert result["val_same_verdict"] >= quantize.MIN_AGREEMENT and result["val_films"] > 10
    assert 0 <= result["val_max_abs_diff"] < 0.2
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["quantization"]["weights"].startswith("int8") and info["quantization"]["format"] == "QDQ"
    graph = OnnxModel.load(out)  # the deployment's own loader: checksums, graph, a blank image
    assert any("QuantizeLinear" in n.op_type for n in __import__("onnx").load(str(out)).graph.node)
    films = sorted((small_folder / "PNEUMONIA").glob("*.jpeg"))[:6] + sorted((small_folder / "NORMAL").glob("*.jpeg"))[:6]
    ours, theirs = predict(films, model=graph), predict(films, model=load_model(backend="torch"))
    assert [p.label for p in ours] == [p.label for p in theirs]
    assert np.abs(np.array([p.probability for p in ours]) - [p.probability for p in theirs]).max() < 0.2


def test_the_convolution_that_reads_the_film_stays_float_and_the_others_are_int8(int8: tuple[Path, dict]) -> None:
    import onnx

    graph = onnx.load(str(int8[0])).graph
    produced_by = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    quantized = [produced_by.get(conv.input[1]) is not None and produced_by[conv.input[1]].op_type == "DequantizeLinear" for conv in convs]
    reads_film = [conv.input[1] in initializers and initializers[conv.input[1]].dims[1] == 1 for conv in convs]
    assert sum(reads_film) == 1 and not any(q for q, film in zip(quantized, reads_film) if film)
    assert all(q for q, film in zip(quantized, reads_film) if not film) and len(convs) > 10


def test_its_input_check_is_fitted_on_its_own_features(int8: tuple[Path, dict]) -> None:
    out, result = int8
    graph, float_check = OnnxModel.load(out), load_model(backend="torch").feature_check
    assert graph.feature_check is not None and not np.array_equal(graph.feature_check.mean, float_check.mean)  # refitted, not copied
    # fitted on the int8 graph's rows of validation and its shifted copies (no outlier films beside this small copy: the distance alone)
    assert set(result["input_check"]["copy_flagged"]) == {"none", *SHIFTS} and result["input_check"]["notes"]


def test_an_int8_graph_that_changes_verdicts_is_not_written(small_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.01)  # no graph can keep more than every verdict
    with pytest.raises(PneumoError, match="another verdict than PyTorch.*nothing was written"):
        export(None, out=tmp_path / "model.onnx", int8=True, data=small_folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
