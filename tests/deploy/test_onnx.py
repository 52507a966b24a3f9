"""pneumo.deploy and pneumo.runtime: ONNX export checked against PyTorch, and prediction without torch."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.deploy import onnx as onnx_module
from pneumo.deploy.onnx import ExportResult, export, export_info
from pneumo.inference.checks import warning_kind
from pneumo.inference.onnx_backend import OnnxModel, encode_arrays
from pneumo.inference.predict import bundled_model_dir, load_model, predict
from pneumo.inference.torch_backend import TorchModel, load_checkpoint
from pneumo.models import create_model
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import CHECKSUM, CheckpointMeta, metadata_sha256, seal
from pneumo.utils.hashing import sha256_file
from pneumo.tasks import PATHOGEN_CLASSES
from tests.conftest import BUNDLED_SIZE, SAMPLES, pick


@pytest.fixture(scope="module")
def bundled() -> TorchModel:
    return load_model(None, backend="torch")


@pytest.fixture(scope="module")
def files(shared_data: Path) -> list[Path]:
    return pick("NORMAL", 8, offset=1) + pick("PNEUMONIA", 8, offset=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, bundled: TorchModel, files: list[Path]) -> tuple[Path, ExportResult]:
    images = np.stack([load_image(f, bundled.image_size) for f in files])
    out = tmp_path_factory.mktemp("export") / "pneumo.onnx"
    return out, export(bundled, out=out, check_images=images)


def test_export_agrees_with_pytorch_and_says_how_to_use_it(exported: tuple[Path, dict], bundled: TorchModel) -> None:
    out, result = exported
    assert (result.path, result.n_images, result.int8) == (out, 16, None) and result.max_abs_diff == pytest.approx(0, abs=1e-4)
    assert result.json_path == out.with_suffix(".json") and result.to_dict()["path"] == str(out)
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["onnx_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    for key in ("architecture", "classes", "image_size", "threshold", "task"):
        assert info[key] == getattr(bundled.meta, key)
    assert info["checkpoint"]["weights_sha256"] == bundled.meta.weights_sha256
    assert sorted(p.name for p in out.parent.iterdir()) == ["pneumo.json", "pneumo.onnx"]  # no staging left behind


def test_runtime_predicts_what_torch_predicts(exported: tuple[Path, dict], bundled: TorchModel, files: list[Path]) -> None:
    ours = predict(files, model=exported[0], batch_size=5)
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
    assert (
        model.feature_check.arrays().keys() == checked.feature_check.arrays(scoring_only=True).keys()
    )  # what scoring needs, not the outlier rows
    images = np.stack([load_image(f, bundled.image_size) for f in files])
    _, ours = model.probabilities_and_scores(images)
    _, theirs = checked.probabilities_and_scores(images)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_both_backends_abstain_on_the_same_films(
    exported: tuple[Path, dict], bundled: TorchModel, files: list[Path], shared_data: Path
) -> None:
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
    assert model.threshold == bundled.threshold and model.image_size == bundled.image_size and model.meta.task == "binary"


def test_runtime_never_imports_torch(exported: tuple[Path, dict], files: list[Path]) -> None:
    code = (
        "import sys; from pneumo.inference.predict import predict; "
        f"r = predict([{str(files[0])!r}], model={str(exported[0])!r}); "
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
    (tmp_path / "m.json").write_text(json.dumps({**info, "onnx_sha256": sha256_file(onnx)}))  # the graph's checksum recomputed by hand
    with pytest.raises(PneumoError, match="m.json was edited or damaged.*pneumo export"):
        OnnxModel.load(onnx)
    (tmp_path / "m.json").write_text(
        json.dumps(seal({**info, "onnx_sha256": sha256_file(onnx)}))
    )  # and the JSON's: onnxruntime refuses the graph
    with pytest.raises(PneumoError, match="onnxruntime cannot load .*damaged"):
        OnnxModel.load(onnx)
    (tmp_path / "m.json").unlink()
    with pytest.raises(PneumoError, match=r"m\.json not found"):
        OnnxModel.load(onnx)


@pytest.fixture()
def shipped(tmp_path: Path) -> Path:
    """The shipped export's JSON, copied, beside a link to its graph: the JSON is what the tests edit."""
    (tmp_path / "m.onnx").symlink_to(bundled_model_dir() / "pneumo.onnx")
    shutil.copy(bundled_model_dir() / "pneumo.json", tmp_path / "m.json")
    return tmp_path / "m.onnx"


def _edit_export(onnx: Path, reseal: bool = False, drop: tuple[str, ...] = (), checkpoint: dict | None = None, **changes: object) -> None:
    """Edit an export's JSON by hand (checksum left as it was), or as a forger who recomputes it (`reseal`)."""
    path = onnx.with_suffix(".json")
    info = json.loads(path.read_text())
    info.update(changes)
    if checkpoint is not None:
        info["checkpoint"] = {**info["checkpoint"], **checkpoint}
    for name in drop:
        info.pop(name)
    path.write_text(json.dumps(seal(info) if reseal else info))


def test_the_shipped_export_loads_checked_and_agrees_with_its_checkpoint(shipped: Path) -> None:
    model = OnnxModel.load(shipped)
    info = json.loads(shipped.with_suffix(".json").read_text())
    assert info[CHECKSUM] == metadata_sha256(info) and info["format_version"] == 2
    assert model.meta.meta_sha256 == json.loads((bundled_model_dir() / "meta.json").read_text())[CHECKSUM]
    assert model.threshold == info["threshold"] and model.feature_check is not None


EDITED_EXPORT = r"m\.json was edited or damaged: its fields no longer match their checksum \(meta_sha256\); an export must be written by `pneumo export`"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"threshold": 2.0}, EDITED_EXPORT),
        ({"threshold": float("nan")}, EDITED_EXPORT),
        ({"threshold": -1}, EDITED_EXPORT),
        ({"threshold": "0.5"}, EDITED_EXPORT),
        ({"threshold": True}, EDITED_EXPORT),
        ({"task": "pathogen"}, EDITED_EXPORT),
        ({"classes": ["PNEUMONIA", "NORMAL"]}, EDITED_EXPORT),
        ({"checkpoint": {"std": 0}}, EDITED_EXPORT),
        ({"checkpoint": {"threshold": 0.5}}, EDITED_EXPORT),
        ({"temperature": 0.5}, EDITED_EXPORT),
        ({"drop": ("onnx_sha256",)}, EDITED_EXPORT),
        ({"drop": (CHECKSUM,)}, r"m\.json has no metadata checksum \(meta_sha256\).*export the model again"),
        (
            {"format_version": 1},
            r"export format 1, which has no metadata checksum, is not supported \(expected 2\); .*export the model again",
        ),
        ({"format": "other"}, "is not a pneumo export's JSON"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_an_edited_export_json_is_refused(shipped: Path, changes: dict, message: str) -> None:
    changes = dict(changes)
    _edit_export(shipped, drop=changes.pop("drop", ()), checkpoint=changes.pop("checkpoint", None), **changes)
    with pytest.raises(PneumoError, match=message):
        OnnxModel.load(shipped)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"threshold": 0.5}, r"its threshold 0\.5 disagrees with its checkpoint's 0\.\d+"),
        ({"classes": ["PNEUMONIA", "NORMAL"]}, "its classes .* disagrees with its checkpoint's"),
        ({"checkpoint": {"threshold": 0.5}}, r"m\.json \(its checkpoint\) was edited or damaged"),
        ({"checkpoint": {"task": "pathogen"}, "task": "pathogen"}, r"m\.json \(its checkpoint\) was edited or damaged"),
        ({"drop": ("onnx_sha256",)}, r"has no graph checksum \(onnx_sha256\)"),
        (
            {"input": {"name": "x", "dtype": "float32", "shape": ["batch", 1, BUNDLED_SIZE, BUNDLED_SIZE]}},
            "input and output names are not a pneumo export's",
        ),
        ({"input": {"name": "pixels", "dtype": "float32", "shape": ["batch", 1, 180, 180]}}, "its input shape is"),
        (
            {"output": {"name": "probabilities", "dtype": "float32", "shape": ["batch", 2], "order": ["PNEUMONIA", "NORMAL"]}},
            "its output order is",
        ),
        ({"drop": ("features_output",)}, "its features_output name is None"),
        (
            {"feature_check": {"encoding": "float32-le-base64", "arrays": {"mean": {"shape": [3], "data": "!!"}}}},
            "feature_check is damaged",
        ),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_a_resealed_export_json_still_meets_its_checks(shipped: Path, changes: dict, message: str) -> None:
    changes = dict(changes)
    _edit_export(shipped, reseal=True, drop=changes.pop("drop", ()), checkpoint=changes.pop("checkpoint", None), **changes)
    with pytest.raises(PneumoError, match=message):
        OnnxModel.load(shipped)


def test_a_fully_forged_export_still_meets_the_field_checks(shipped: Path) -> None:
    info = json.loads(shipped.with_suffix(".json").read_text())
    checkpoint = seal({**info["checkpoint"], "threshold": 2.0})
    shipped.with_suffix(".json").write_text(json.dumps(seal({**info, "threshold": 2.0, "checkpoint": checkpoint})))
    with pytest.raises(PneumoError, match=r"\(its checkpoint\): threshold 2\.0 is not a probability in \[0, 1\]"):
        OnnxModel.load(shipped)


def _tiny_graph(
    path: Path,
    size: int = 16,
    input_name: str = "pixels",
    outputs: tuple[str, ...] = ("probabilities", "features"),
    batch: str | int = "batch",
    n_classes: int = 2,
    scale: float = 1.0,
    feature_check: dict | None = None,
    nan_unless_blank: bool = False,
) -> Path:
    """A pneumo-shaped ONNX graph built by hand (P(pneumonia) = sigmoid(mean pixel / 255)), with a
    sealed JSON that describes a pneumo export of it: only the graph varies between tests.
    `nan_unless_blank` adds 0 * sqrt(-mean): NaN for every image but a black one."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Div", ["m", "c255"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["s"]),
    ]
    if nan_unless_blank:
        nodes += [
            helper.make_node("Neg", ["m"], ["neg"]),
            helper.make_node("Sqrt", ["neg"], ["root"]),
            helper.make_node("Mul", ["root", "zero"], ["nothing"]),
            helper.make_node("Add", ["s", "nothing"], ["p"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["s"], ["p"]))
    nodes += [
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"] + ["p"] * (n_classes - 2), ["cat"], axis=1),
        helper.make_node("Mul", ["cat", "scale"], [outputs[0]]),
    ]
    nodes += [helper.make_node("Identity", ["m"], [name]) for name in outputs[1:]]
    constants = [
        helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("c255", 255.0), ("one", 1.0), ("scale", scale), ("zero", 0.0))
    ]
    shapes = [[batch, n_classes]] + [[batch, 1]] * (len(outputs) - 1)
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 1, size, size])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in zip(outputs, shapes)],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], 1, 16, 0.0, 1.0, 0.5, weights_sha256="ab" * 32)
    path.with_suffix(".json").write_text(json.dumps(export_info(meta, 17, feature_check, sha256_file(path))))
    return path


def test_a_hand_built_graph_that_fits_loads_and_predicts(tmp_path: Path) -> None:
    model = OnnxModel.load(_tiny_graph(tmp_path / "tiny.onnx"))
    p = model.pneumonia_probability(np.array([np.zeros((16, 16)), np.full((16, 16), 255)], dtype=np.uint8))
    np.testing.assert_allclose(p, [0.5, 1 / (1 + np.exp(-1))], atol=1e-6)
    assert predict([SAMPLES / "dicom" / "cr_chest_pa_monochrome1.dcm"], model=model, abstain=False)[0].label in ("NORMAL", "PNEUMONIA")


@pytest.mark.parametrize(
    "graph, message",
    [
        ({"input_name": "x"}, r"its inputs are \['x'\], not \['pixels'\]"),
        ({"size": 32}, r"its input is tensor\(float\) \['batch', 1, 32, 32\], not float32 \[batch, 1, 16, 16\]"),
        ({"batch": 1}, "its input takes batches of exactly 1 image"),
        ({"outputs": ("probabilities",)}, r"its outputs are \['probabilities'\], not \['probabilities', 'features'\]"),
        ({"outputs": ("probabilities", "features", "extra")}, "its outputs are .*'extra'"),
        ({"outputs": ("logits", "features")}, r"its outputs are \['logits', 'features'\]"),
        ({"n_classes": 3}, r"probabilities of shape \[2, 3\] for 2 images, not \[2, 2\]"),
        ({"scale": 5.0}, "are not probabilities that sum to 1"),
        ({"scale": float("nan")}, "are not probabilities that sum to 1"),
        (
            {"feature_check": encode_arrays({"mean": np.zeros(4), "precision": np.eye(4), "threshold": np.array(1.0)})},
            r"its features are \[2, 1\] for 2 images, not \[2, 4\] the input check needs",
        ),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_a_graph_that_does_not_fit_is_refused_at_load(tmp_path: Path, graph: dict, message: str) -> None:
    onnx = _tiny_graph(tmp_path / "tiny.onnx", **graph)
    with pytest.raises(PneumoError, match=f"the graph beside .*tiny.json does not fit it: .*{message}.*export the model again"):
        OnnxModel.load(onnx)


def test_a_graph_that_gives_nan_on_real_films_is_an_error_not_a_label(tmp_path: Path, files: list[Path]) -> None:
    model = OnnxModel.load(_tiny_graph(tmp_path / "tiny.onnx", nan_unless_blank=True))  # a blank image passes the load check
    with pytest.raises(
        PneumoError,
        match=f"the model produced a non-finite probability for {files[0]} \\(\\[nan, nan\\]\\); the model or the input is damaged",
    ):
        predict(files[:2], model=model, abstain=False)


def test_a_service_with_a_graph_that_does_not_fit_never_starts(tmp_path: Path) -> None:
    from pneumo.service.app import create_app

    with pytest.raises(PneumoError, match="its inputs are"):
        create_app(_tiny_graph(tmp_path / "tiny.onnx", input_name="x"))


def test_a_failed_parity_check_writes_nothing(bundled: TorchModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_module, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(PneumoError, match="differs from PyTorch"):
        export(bundled, out=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PneumoError, match=r"\.onnx file path"):
        export(bundled, out=tmp_path / "m.pt")


def test_a_pathogen_seed_cnn_exports_its_softmax(tmp_path: Path, files: list[Path]) -> None:
    classes = list(PATHOGEN_CLASSES)
    meta = {
        "architecture": "seed_cnn",
        "task": "pathogen",
        "classes": classes,
        "num_outputs": 3,
        "image_size": 180,
        "mean": 0.0,
        "std": 1.0,
        "threshold": 0.5,
    }
    ckpt = save_checkpoint(tmp_path / "ckpt", create_model("seed_cnn", num_outputs=3, image_size=180), CheckpointMeta(**meta))
    result = export(ckpt, out=tmp_path / "seed.onnx", opset=18)  # no images given: seeded synthetic ones
    assert result.n_images == 8 and result.max_abs_diff <= 1e-4
    model = OnnxModel.load(tmp_path / "seed.json")
    probs = model.class_probabilities(np.stack([load_image(f, 180) for f in files[:3]]))
    assert probs.shape == (3, 3) and model.classes == classes
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_a_content_crop_is_part_of_the_graph(tmp_path: Path, files: list[Path]) -> None:
    """`crop: content` runs inside the exported graph: onnxruntime crops as PyTorch does, margins and all."""
    from pneumo.evaluation.robustness import apply_shift

    torch.manual_seed(0)
    meta = CheckpointMeta(
        "resnet18_half", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=224, mean=0.5, std=0.25, threshold=0.5, crop="content"
    )
    ckpt = save_checkpoint(tmp_path / "ckpt", create_model("resnet18_half", image_size=224, crop="content"), meta)
    result = export(ckpt, out=tmp_path / "crop.onnx")
    assert result.max_abs_diff <= 1e-4
    images = np.stack([load_image(f, 224) for f in files[:4]])
    framed = apply_shift(images, "looser (15% black margin)")
    torch_model, onnx_model = load_checkpoint(ckpt), OnnxModel.load(tmp_path / "crop.json")
    for batch in (images, framed):
        np.testing.assert_allclose(onnx_model.pneumonia_probability(batch), torch_model.pneumonia_probability(batch), atol=1e-4)


def test_an_output_that_is_a_folder_or_a_device_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    def no_work(*_a: object, **_k: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(onnx_module, "load_model", no_work)
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "folder.onnx" / "keep").write_text("mine")
    (tmp_path / "null.onnx").symlink_to("/dev/null")
    (tmp_path / "json.json").mkdir()
    for out, message in (
        (tmp_path / "folder.onnx", "is a folder, not a file"),
        (tmp_path / "null.onnx", "is a device, not a regular file"),
        (tmp_path / "json.onnx", r"metadata file .*json\.json is a folder"),
    ):
        with pytest.raises(PneumoError, match=message):
            export(None, out=out)
    assert (tmp_path / "folder.onnx" / "keep").read_text() == "mine" and (tmp_path / "json.json").is_dir()
    assert (tmp_path / "null.onnx").is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.onnx", "json.json", "null.onnx"]  # no staging folder left


def test_a_full_disk_under_the_export_is_one_error_naming_it_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full)
    with pytest.raises(PneumoError, match=r"cannot write the export .*m\.onnx \(No space left on device\): free some disk space"):
        export(out=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []  # no staging folder, no half file


@pytest.mark.parametrize("opset", [99, 3, "17", True])
def test_an_opset_this_pytorch_cannot_write_is_refused_before_anything_runs(opset: object, tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match=r"the ONNX opset must be a whole number from 9 to 20 \(what this PyTorch exports\)"):
        export(out=tmp_path / "m.onnx", opset=opset)
    assert list(tmp_path.iterdir()) == []
