"""`pneumo.inference.batch.predict_archive` spread over a Ray cluster (`pip install 'pneumo[ray]'`).

The driver lists the files (the same walk or manifest as `predict_archive`), Ray Data hands
them out in batches to a pool of actors, each of which decodes its files and runs the ONNX
model it built once at start, and the driver appends the rows to one CSV as they come back.

Where it runs: `address=None` uses Ray as `ray.init()` finds it (a local instance it starts
and stops, or the cluster named by $RAY_ADDRESS or left by `ray start --head` on this machine);
`address="ray://head:10001"` (Ray Client) or `"head:6379"` joins that cluster. If this process
already called `ray.init`, that connection is used and left open. Every node needs pneumo
installed and the files readable at the same paths (a shared filesystem); the model itself is
sent from the driver, so nodes need neither its file nor PyTorch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import PneumoError
from pneumo.inference.base import Prediction
from pneumo.inference.batch import BatchSummary, ResultWriter, decode_files, iter_source
from pneumo.inference.classify import classify_images
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import BUNDLED_ONNX, bundled_model_dir

__all__ = ["predict_archive_ray"]


class _Predictor:
    """One per actor: the onnxruntime session is built once from the model's bytes, on one
    thread per CPU that Ray gave the actor, so actors do not fight over cores."""

    def __init__(self, onnx: bytes, export: dict[str, Any], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        self.model = OnnxModel(session, export)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Paths in; per path the prediction as JSON, or why the file could not be read."""
        paths = [str(p) for p in batch["path"]]
        decoded, skipped = decode_files(paths, self.model.image_size)
        predictions = {}
        if decoded:
            names, images, infos = zip(*decoded)
            predictions = {p.path: json.dumps(p.to_dict()) for p in classify_images(np.stack(images), infos, names, self.model)}
        errors = dict(skipped)
        return {
            "path": np.array(paths, dtype=object),
            "prediction": np.array([predictions.get(p, "") for p in paths], dtype=object),
            "error": np.array([errors.get(p, "") for p in paths], dtype=object),
        }


def _prediction(row: str) -> Prediction:
    fields = json.loads(row)
    return Prediction(**{**fields, "warnings": tuple(fields["warnings"])})


def predict_archive_ray(
    source: str | Path,
    out: str | Path,
    model: str | Path | None = None,
    batch_size: int = 64,
    concurrency: int = 2,
    address: str | None = None,
) -> BatchSummary:
    """Classify every image under a folder or in a CSV manifest on `concurrency` Ray actors
    (one CPU each), writing the same CSV as `predict_archive` with the rows in the order they finish.

    Args:
        model: an exported .onnx (`pneumo export`); the bundled model's export when None.
        address: the Ray cluster to use; None for a local instance (see the module's docstring).
    Unreadable files go to `<out stem>.skipped.csv`, as with `predict_archive`.
    """
    try:
        import ray.data
    except ImportError:
        raise PneumoError("predicting on Ray needs Ray Data: pip install 'pneumo[ray]'") from None
    if batch_size < 1 or concurrency < 1:
        raise PneumoError(f"batch size and concurrency must be at least 1, not {batch_size} and {concurrency}")
    onnx_path = Path(model).expanduser() if model is not None else bundled_model_dir() / BUNDLED_ONNX
    export = OnnxModel.load(onnx_path).export  # checks the export (checksum, metadata) once, here
    paths = [{"path": p} for p in iter_source(source)()]
    if not paths:
        raise PneumoError(f"no image files found in {source}")
    writer = ResultWriter.open(out)
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(address=address)
        start = time.perf_counter()
        results = ray.data.from_items(paths).map_batches(
            _Predictor,
            fn_constructor_kwargs={"onnx": onnx_path.with_suffix(".onnx").read_bytes(), "export": export, "threads": 1},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=1,
        )
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            rows = list(zip(batch["path"], batch["prediction"], batch["error"]))
            writer.write([_prediction(p) for _, p, _ in rows if p], [(path, error) for path, _, error in rows if error])
        seconds = time.perf_counter() - start
    finally:
        writer.close()  # its output lock too, whatever stopped the run (ray.init included)
        if started:
            ray.shutdown()
    if not writer.n_done:
        raise PneumoError(f"none of the {writer.n_skipped} files could be read; {writer.skipped_out} says why for each")
    return BatchSummary(writer.out, writer.n_done, writer.n_skipped, 0, seconds, writer.skipped_out if writer.n_skipped else None)
