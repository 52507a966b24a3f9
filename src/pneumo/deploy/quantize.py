"""An int8 ONNX graph of an export: onnxruntime's static quantization, checked by the verdicts it gives.

The float graph's convolutions and classifier are quantized per output channel (weights int8,
activations uint8, QDQ format), their ranges calibrated on the model's own training films. Two parts
stay float: the content crop's resampling products and the first convolution, which read the film's
own pixels (one channel, where 8 bits cost verdicts, and where int8 kernels gain nothing). An
int8 graph does not reproduce float probabilities to 1e-4, so the parity check becomes a decision
check: on the model's validation films at least `MIN_AGREEMENT` must get the same verdict at the
threshold, and the largest |dP| is reported. Its feature rows move too, so the input check is fitted
again on the int8 graph's own rows (training films and their copies, validation films and their
shifted copies, the outlier films), and measured as at the end of a run.

Example:
    >>> export("runs/student", out="student-int8.onnx", int8=True)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.data.cache import decode_dataset
from pneumo.errors import PneumoError
from pneumo.evaluation.robustness import FAULTS, SHIFTS, apply_fault, apply_shift, fault_copies
from pneumo.inference.features import feature_width
from pneumo.inference.fitting import CheckFit, fit_check
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.torch_backend import TorchModel
from pneumo.tasks import pneumonia_probability
from pneumo.training.data import model_recipe, outlier_films, split_training_records
from pneumo.training.report import _check_sample, inlier_views
from pneumo.utils.progress import progress_bar

__all__ = ["CALIBRATION_FILMS", "MIN_AGREEMENT", "Int8Result", "quantize_graph", "int8_evidence"]

MIN_AGREEMENT = 0.995  # share of validation films whose verdict the int8 graph must keep
CALIBRATION_FILMS = 256  # training films the activation ranges are calibrated on


@dataclass
class Int8Result:
    """What quantizing measured: verdict agreement and |dP| on validation, and the input check fitted on the int8 rows."""

    agreement: float
    n_val: int
    max_abs_diff: float
    fit: CheckFit

    def summary(self) -> dict[str, Any]:
        fit = self.fit
        return {
            "weights": "int8, per output channel",
            "activations": "uint8",
            "format": "QDQ",
            "calibration_films": CALIBRATION_FILMS,
            "val_films": self.n_val,
            "val_same_verdict": self.agreement,
            "val_max_abs_diff": self.max_abs_diff,
            "input_check": {
                "val_flagged": fit.val_flagged,
                "n_val": fit.n_val,
                "outliers_caught": fit.outliers_caught,
                "n_outliers": fit.n_outliers,
                "copy_flagged": fit.copy_flagged,
                "fault_flagged": fit.fault_flagged,
                "notes": fit.notes,
            },
        }


def _reader(images: np.ndarray, batch: int = 16) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Films(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(images[start : start + batch] for start in range(0, len(images), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.batches, None)
            return None if chunk is None else {"pixels": chunk[:, None].astype(np.float32)}

    return Films()


def quantize_graph(float_graph: Path, out: Path, calibration: np.ndarray) -> None:
    """Write `out`, the int8 form of `float_graph`, its activation ranges from uint8 films [N, S, S]."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_graph), str(prepared), skip_symbolic_shape=True)
        stems = _film_convolutions(prepared)
        quantize_static(
            str(prepared),
            str(out),
            _reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # the content crop's products (MatMul) and the first convolution stay float (module docstring)
            op_types_to_quantize=["Conv", "Gemm"],
            nodes_to_exclude=stems,
        )


def _film_convolutions(graph: Path) -> list[str]:
    """The convolutions that read a one-channel input: the film itself (each member's, in an ensemble)."""
    import onnx

    model = onnx.load(str(graph))
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    stems = []
    for node in model.graph.node:
        groups = next((attr.i for attr in node.attribute if attr.name == "group"), 1)
        shape = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if shape is not None and len(shape) == 4 and shape[1] * groups == 1:
            stems.append(node.name)
    return stems


def int8_evidence(
    model: TorchModel, data: str | Path | None, progress: bool = False, quiet: bool = False
) -> tuple[np.ndarray, Callable[[OnnxModel], Int8Result]]:
    """The model's training films to calibrate the int8 graph on, and a function that judges a quantized graph:
    its verdicts against PyTorch's on the validation films, and the input check fitted on its own rows."""
    config = model_recipe(model.meta.config, model.folder, data)
    train, val = split_training_records(config)
    films = decode_dataset(train + val, model.image_size, config.cache_dir or None, config.workers, progress=progress)
    if films.skipped:
        raise PneumoError(
            f"{len(films.skipped)} of the model's training and validation films cannot be read; int8 calibration needs them all"
        )
    x_train, x_val = films.images[: len(train)], films.images[len(train) :]
    width = feature_width(model.net)
    sample = np.asarray(_check_sample(x_train, width))
    calibration = sample[np.random.default_rng(0).permutation(len(sample))[:CALIBRATION_FILMS]]
    outliers = outlier_films(config, progress, quiet)

    def judge(graph: OnnxModel) -> Int8Result:
        reference = pneumonia_probability(model.class_probabilities(x_val))
        int8_probs, val_rows = graph.class_probabilities_and_features(x_val)
        p = pneumonia_probability(int8_probs)
        same = float(((p >= model.threshold) == (reference >= model.threshold)).mean())
        if same < MIN_AGREEMENT:
            raise PneumoError(
                f"the int8 graph gives another verdict than PyTorch for {1 - same:.1%} of the {len(x_val)} validation films "
                f"(at most {1 - MIN_AGREEMENT:.1%} allowed); nothing was written; export without --int8"
            )
        rows = lambda images: graph.class_probabilities_and_features(images)[1]  # noqa: E731
        shifted = {
            name: rows(apply_shift(x_val, name)) for name in progress_bar(SHIFTS, len(SHIFTS), "int8 graph on shifted copies", progress)
        }
        fit = fit_check(
            rows(sample),
            width,
            val_rows,
            rows(outliers.images) if outliers is not None else None,
            outliers.sources if outliers is not None else None,
            rows(inlier_views(sample, config.augment)),
            shifted,
            progress=progress,
            faults=rows(fault_copies(sample)) if outliers is not None else None,
            faults_val={name: rows(apply_fault(x_val, name)) for name in FAULTS} if outliers is not None else None,
        )
        return Int8Result(same, len(x_val), float(np.abs(p - reference).max()), fit)

    return calibration, judge
