"""Export a checkpoint to ONNX, normalisation and sigmoid/softmax included, checked against PyTorch.

The graph takes raw pixels, float32 [N, 1, S, S] in 0..255 (the batch axis is dynamic), and
returns class probabilities [N, n_classes] in the order of `meta.classes`; so a deployment
(`pneumo.inference.onnx_backend`) needs no normalisation constants and cannot get them wrong. Beside
`<name>.onnx` goes `<name>.json`: classes, image size, threshold, task, the graph's sha256,
the input check's arrays and the source checkpoint's metadata record, the whole sealed by its
own checksum (`meta_sha256`, `pneumo.models.meta.seal`), which the runtime checks on load.

Example:
    >>> export(None, out="pneumo.onnx", check_images=images)   # the bundled model
    {'path': 'pneumo.onnx', 'max_abs_diff': 2.4e-07, 'n_images': 16}
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumo.data.preprocess import check_image_batch, normalise
from pneumo.errors import PneumoError, check_flag, check_path
from pneumo.inference.base import Model
from pneumo.inference.features import FeatureTap
from pneumo.inference.onnx_backend import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, OnnxModel, encode_arrays
from pneumo.inference.loading import check_model, load_model
from pneumo.inference.torch_backend import TorchModel
from pneumo.models.meta import CheckpointMeta, seal
from pneumo.utils.atomic import writing
from pneumo.utils.hashing import sha256_file
from pneumo.utils.output_checks import output_file

__all__ = ["EXPORT_FORMAT_VERSION", "PARITY_TOLERANCE", "ExportResult", "export", "export_info"]

# largest |P_onnx - P_torch| accepted; float32 reordering differences are ~1e-6
PARITY_TOLERANCE = 1e-4
# the opsets this PyTorch's TorchScript exporter writes and onnxruntime runs
MIN_OPSET, MAX_OPSET = 9, 20


class _PixelsToProbabilities(nn.Module):
    """The network with the checkpoint's preprocessing before it and its output activation
    after; its feature rows (what the input check scores, `pneumo.inference.features.FeatureTap`) as a second output."""

    def __init__(self, net: nn.Module, meta: CheckpointMeta) -> None:
        super().__init__()
        self.net, self.task, self.mean, self.std = net, meta.task_spec, meta.mean, meta.std
        self.temperature, self.logit_offset = meta.temperature, meta.logit_offset
        self._tap = FeatureTap(net).__enter__()  # stays attached: this wrapper exists to be exported

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._tap.rows.clear()
        probabilities = self.task.probabilities(
            self.net(normalise(pixels / 255.0, self.mean, self.std)), self.temperature, self.logit_offset
        )
        return probabilities, self._tap.rows[-1]


def _check_images(images: np.ndarray | None, size: int) -> np.ndarray:
    """The caller's images, or else 8 seeded smooth random ones (a numerical check, weaker than real X-rays)."""
    if images is None:
        rng = np.random.default_rng(0)
        coarse = rng.uniform(0, 255, size=(8, 1, 8, 8)).astype(np.float32)
        smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=False)
        noise = rng.normal(0, 12, size=(8, 1, size, size))
        return np.clip(smooth.numpy() + noise, 0, 255).astype(np.uint8)[:, 0]
    return check_image_batch(images, size, "check_images", allow_empty=False)


def _feature_check(model: TorchModel) -> dict[str, Any] | None:
    """The checkpoint's input check for the export's JSON, or None when it has none."""
    check = model.with_feature_check().feature_check
    return encode_arrays(check.arrays(scoring_only=True)) if check is not None else None


def export_info(
    meta: CheckpointMeta, opset: int, feature_check: dict[str, Any] | None, onnx_sha256: str, quantization: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An export's JSON for a graph made from a checkpoint with metadata `meta`, sealed with its checksum.

    Args:
        meta: the checkpoint's metadata (validated here; its record is embedded whole).
        opset: the graph's ONNX opset.
        feature_check: the input check's arrays as `encode_arrays` gives them, or None.
        onnx_sha256: the graph file's sha256.
        quantization: for an int8 graph, how it was quantized and what that was measured to change.
    """
    size, classes = meta.image_size, list(meta.classes)
    info = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "opset": opset,
        "architecture": meta.architecture,
        "task": meta.task,
        "classes": classes,
        "image_size": size,
        "threshold": meta.threshold,
        "temperature": meta.temperature,
        "input": {
            "name": "pixels",
            "dtype": "float32",
            "shape": ["batch", 1, size, size],
            "values": "raw pixels 0..255; normalisation is in the graph",
        },
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["batch", len(classes)], "order": classes},
        "features_output": {
            "name": "features",
            "dtype": "float32",
            "shape": ["batch", "width"],
            "values": "penultimate features, then channel means and standard deviations at each resolution: what the input check scores",
        },
        "feature_check": feature_check,
        "onnx_sha256": onnx_sha256,
        "checkpoint": meta.record("the checkpoint's metadata"),
    }
    if quantization is not None:
        info["quantization"] = quantization
    return seal(info)


def _parity(exported: OnnxModel, checked: TorchModel, reference: TorchModel, images: np.ndarray) -> float:
    """The largest probability difference between the export and PyTorch; refuses an export
    whose probabilities or input-check scores disagree with the checkpoint's."""
    probs, scores = exported.probabilities_and_scores(images)
    diff = float(np.abs(probs - reference.class_probabilities(images)).max())
    if not diff <= PARITY_TOLERANCE:
        raise PneumoError(
            f"the ONNX export of {checked.meta.architecture} differs from PyTorch by {diff:.2g} (> {PARITY_TOLERANCE:g}) in probability; nothing was written; try another --opset"
        )
    if scores is not None:
        expected = checked.probabilities_and_scores(images)[1]
        if not np.allclose(scores, expected, rtol=1e-3, atol=1e-3, equal_nan=True):
            raise PneumoError(
                f"the ONNX export's input-check scores differ from PyTorch's (up to {np.nanmax(np.abs(scores - expected)):.2g}); nothing was written; try another --opset"
            )
    return diff


@dataclass(frozen=True)
class ExportResult:
    """What `export` wrote and how it was checked: `max_abs_diff` (largest |P_onnx - P_torch| over
    `n_images` images) for a float graph; `int8` (the decision check's figures) for an int8 one."""

    path: Path
    max_abs_diff: float | None = None
    n_images: int | None = None
    int8: dict[str, Any] | None = None

    @property
    def json_path(self) -> Path:
        return self.path.with_suffix(".json")

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "max_abs_diff": self.max_abs_diff, "n_images": self.n_images, "int8": self.int8}


def export(
    model: str | Path | Model | None = None,
    *,
    out: str | Path,
    opset: int = 17,
    check_images: np.ndarray | None = None,
    int8: bool = False,
    data: str | Path | None = None,
    progress: bool = False,
) -> ExportResult:
    """Write `out` (.onnx) and its .json, after checking that onnxruntime agrees with PyTorch.

    Nothing is written unless the check passes; the user's model is not modified (a CPU copy
    is exported).

    Args:
        model: a checkpoint path, a loaded model, or None for the bundled model.
        out: the .onnx file to write; `<out stem>.json` is written beside it.
        opset: ONNX opset version.
        check_images: uint8 [N, S, S] images at the model's size for the parity check; real
            X-rays are the meaningful test (without them, 8 seeded synthetic images are used).
        int8: write an int8 graph instead (`pneumo.deploy.quantize`): calibrated on the model's
            training films and checked by its verdicts on its validation films (drawn again from its
            recipe, with its data at `data` if not where the recipe says); its input check is fitted
            again on the int8 graph's own features.

    Returns:
        An `ExportResult`; for an int8 graph its `int8` holds `pneumo.deploy.quantize.Int8Result.summary()`'s fields.

    Raises:
        PneumoError: `out` is not a .onnx path; it or its .json cannot be written (a folder, a
            device, a folder without write permission: `pneumo.utils.atomic.WriteError`, checked
            before any work); the images are malformed; the exported graph's probabilities
            differ from PyTorch's by more than `PARITY_TOLERANCE`; an int8 graph changes more verdicts
            than `MIN_AGREEMENT` allows; or `opset` is not one this PyTorch exports.
    """
    check_model("model", model)
    out = Path(check_path("out", out, what="the .onnx file to write")).expanduser()
    check_path("data", data, what="the model's training data", optional=True)
    int8, progress = check_flag("int8", int8), check_flag("progress", progress)
    if out.suffix != ".onnx":
        raise PneumoError(f"{out}: the export must be a .onnx file path, e.g. model.onnx")
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise PneumoError(
            f"the ONNX opset must be a whole number from {MIN_OPSET} to {MAX_OPSET} (what this PyTorch exports); got {opset!r}"
        )
    output_file(out, "the export")  # before any work: not a folder, device or pipe; a folder that can be written
    output_file(out.with_suffix(".json"), "the export's metadata file")
    loaded = load_model(model, backend="torch")
    if not isinstance(loaded, TorchModel):
        raise PneumoError("export needs a PyTorch checkpoint (a run or checkpoint folder), not an ONNX export")
    meta = loaded.meta
    if not meta.weights_sha256:
        raise PneumoError(
            "export needs a model saved as a checkpoint (its metadata has no weights checksum): save it with save_checkpoint and export that folder"
        )
    reference = TorchModel(copy.deepcopy(loaded.net).cpu().float().eval(), meta)
    images = _check_images(check_images, loaded.image_size)
    with writing(out, "the export"):  # a full disk or a read-only folder: one line naming the file, nothing half-written
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
        try:
            onnx_tmp = staging / out.name
            example = torch.zeros(1, 1, loaded.image_size, loaded.image_size)
            with warnings.catch_warnings():
                # torch >= 2.9 deprecates its TorchScript exporter (the dynamo one needs onnxscript); it is
                # fine for these CNNs, and its deprecation notices are not something a user can act on
                warnings.simplefilter("ignore", DeprecationWarning)
                # the feature tap reads feature-map sizes as Python ints: constants of the network at its fixed input size
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(
                    _PixelsToProbabilities(reference.net, meta).eval(),
                    (example,),
                    str(onnx_tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["pixels"],
                    output_names=["probabilities", "features"],
                    dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}, "features": {0: "batch"}},
                )
            info = export_info(meta, opset, _feature_check(loaded), sha256_file(onnx_tmp))
            onnx_tmp.with_suffix(".json").write_text(json.dumps(info, indent=2))
            # checked through the deployment's own loader, so a graph it cannot run is never written
            diff = _parity(OnnxModel.load(onnx_tmp), loaded.with_feature_check(), reference, images)
            result = ExportResult(out, max_abs_diff=diff, n_images=len(images))
            if int8:
                onnx_tmp = _int8(onnx_tmp, loaded.with_feature_check(), meta, opset, data, progress)
                result = ExportResult(out, int8=json.loads(onnx_tmp.with_suffix(".json").read_text())["quantization"])
            os.replace(onnx_tmp, out)
            os.replace(onnx_tmp.with_suffix(".json"), out.with_suffix(".json"))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return result


def _int8(float_graph: Path, model: TorchModel, meta: CheckpointMeta, opset: int, data: str | Path | None, progress: bool) -> Path:
    """The int8 graph of a float export in the same staging folder, with its JSON: judged by its verdicts, its input check refitted."""
    from pneumo.deploy.quantize import int8_evidence, quantize_graph

    graph = float_graph.with_name(f"int8-{float_graph.name}")
    calibration, judge = int8_evidence(model, data, progress, quiet=True)
    quantize_graph(float_graph, graph, calibration)
    provisional = export_info(meta, opset, _feature_check(model), sha256_file(graph))  # the float check, to load and judge the graph with
    graph.with_suffix(".json").write_text(json.dumps(provisional, indent=2))
    measured = judge(OnnxModel.load(graph))
    info = export_info(meta, opset, encode_arrays(measured.fit.check.arrays(scoring_only=True)), sha256_file(graph), measured.summary())
    graph.with_suffix(".json").write_text(json.dumps(info, indent=2))
    OnnxModel.load(graph)  # the final pair loads as a deployment would load it
    return graph
