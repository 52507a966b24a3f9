"""Loading a model: the one function every command, the service and the library go through.

`load_model(path=None, *, backend="auto")` takes a run folder, a checkpoint folder (or one of its
files), an exported `.onnx` (or its `.json`), a loaded model, or None for the model bundled in the
package, and returns a `pneumo.inference.base.Model` with its input check attached (`checks=False`
leaves it off). One rule chooses the backend:

- "onnx": onnxruntime. A `.onnx` as given; for a checkpoint, the export beside it (`pneumo.onnx`
  in the checkpoint folder, as the bundled model has), which must have been made from exactly that
  checkpoint's metadata (`meta_sha256`); PyTorch is never imported.
- "torch": PyTorch, for what needs the network itself (Grad-CAM, export, calibration, training).
  A checkpoint only.
- "auto" (the default): the export beside a checkpoint when there is one that matches it (checked at
  export: the same answers within 1e-4, or, for an int8 graph, the same verdict on at least 99.5% of
  validation films; at a fraction of the start-up cost), else PyTorch, else
  (PyTorch not installed) an error that says how to make an export. A `.onnx` is an export.

Example:
    >>> model = load_model()                       # the bundled model, through onnxruntime
    >>> model = load_model("runs/cpu", backend="torch")
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from importlib import resources
from pathlib import Path

from pneumo.errors import PneumoError, check_choice, check_flag, check_path, refuse
from pneumo.inference.base import Model
from pneumo.models.meta import META

__all__ = ["BACKENDS", "BUNDLED_ONNX", "MODEL_ACCEPTED", "bundled_model_dir", "check_model", "load_model"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")
MODEL_ACCEPTED = "a run or checkpoint folder, an exported .onnx, a loaded model, or None for the bundled one"
BUNDLED_ONNX = "pneumo.onnx"  # a checkpoint's own export, beside its weights (the bundled model's is there)


def bundled_model_dir() -> Path:
    """Where the model shipped inside the package lives."""
    return Path(str(resources.files("pneumo") / "weights"))


def _is_export(path: Path) -> bool:
    return path.suffix.lower() == ".onnx" or (path.suffix.lower() == ".json" and path.name != META)


def _checkpoint_folder(path: Path) -> Path | None:
    """The checkpoint folder of a run folder, a checkpoint folder or one of its files; None when it is none."""
    if path.is_file() and path.name in (META, "weights.safetensors"):
        path = path.parent
    if (path / "model" / META).is_file():
        path = path / "model"
    return path if (path / META).is_file() else None


def _own_export(folder: Path) -> Model | None:
    """The export beside a checkpoint, when it was made from exactly that checkpoint's metadata (an export of the
    same weights made before `pneumo calibrate` moved the threshold would answer with the old one)."""
    from pneumo.inference.onnx_backend import OnnxModel
    from pneumo.models.meta import WRITTEN_BY_PNEUMO, CheckpointMeta
    from pneumo.utils.reading import read_json

    if not (folder / BUNDLED_ONNX).is_file():
        return None
    meta = CheckpointMeta.load(read_json(folder / META, WRITTEN_BY_PNEUMO), str(folder / META))  # an edited meta.json is refused here too
    export = OnnxModel.load(folder / BUNDLED_ONNX)
    if export.meta.meta_sha256 != meta.meta_sha256:
        log.warning(
            "not using %s: it was exported from other metadata than %s holds (export the model again)", folder / BUNDLED_ONNX, folder / META
        )
        return None
    return export


def check_model(name: str, value: object) -> None:
    """Refuse, before any work, a `model` argument that is not one: every function that takes one
    (predict, evaluate, calibrate, ensemble, serve, predict_archive) calls this at its entry."""
    if value is None or isinstance(value, Model):
        return
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, (str, os.PathLike)):
        raise refuse(name, MODEL_ACCEPTED, value)
    check_path(name, value, what="a run or checkpoint folder or an exported .onnx")


def _check_device(value: object) -> str:
    """The device a PyTorch model is asked to run on, as a str: "cpu", "cuda" or "cuda:N" (a torch.device
    too); a GPU that is not there is refused here, not by an assertion inside PyTorch."""
    loaded_torch = sys.modules.get("torch")  # not imported: the value cannot be a torch.device
    if loaded_torch is not None and isinstance(value, loaded_torch.device):
        value = str(value)
    accepted = "'cpu', 'cuda' or 'cuda:N' (a str or torch.device)"
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d{1,3})?", value):
        raise refuse("device", accepted, value)
    if value == "cpu":
        return value
    if importlib.util.find_spec("torch") is None:
        raise refuse("device", "'cpu' here (PyTorch is not installed)", value)
    import torch

    index = int(value.partition(":")[2] or 0)
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        found = f"{torch.cuda.device_count()} CUDA GPU(s)" if torch.cuda.is_available() else "no CUDA GPU"
        raise refuse("device", f"'cpu' or a CUDA GPU that is there (this machine has {found})", value)
    return value


def _is_torch(model: Model) -> bool:
    torch_backend = sys.modules.get("pneumo.inference.torch_backend")  # not imported: no PyTorch model exists yet
    return torch_backend is not None and isinstance(model, torch_backend.TorchModel)


def load_model(path: str | Path | Model | None = None, *, backend: str = "auto", checks: bool = True, device: str = "cpu") -> Model:
    """A model to predict with (module docstring: which backend, and why).

    Args:
        path: a run or checkpoint folder (or one of its files), an exported `.onnx`, a loaded model
            (returned as it is, its check attached), or None for the bundled model.
        backend: "auto", "onnx" or "torch".
        checks: attach the model's input check (distance and probe; `Model.feature_check`), where it has one.
        device: where a PyTorch model runs.
    """
    check_model("path", path)
    check_choice("backend", backend, BACKENDS)
    checks = check_flag("checks", checks)
    device = _check_device(device)
    if isinstance(path, Model):
        if backend == "torch" and not _is_torch(path):
            if path.checkpoint is None:
                raise PneumoError(
                    "this needs the PyTorch checkpoint of the model (a run or checkpoint folder); the model given was loaded from an ONNX export alone"
                )
            return load_model(path.checkpoint, backend="torch", checks=checks, device=device)
        return path.with_feature_check() if checks else path
    target = bundled_model_dir() if path is None else Path(path).expanduser()
    if path is None and not (target / META).is_file():
        raise PneumoError("this pneumo has no bundled model; train one (`pneumo train`) and pass --model RUN_DIR")
    if path is not None and not target.exists():
        raise PneumoError(f"{path} does not exist: give a run folder, a checkpoint folder or an exported .onnx")
    if _is_export(target):
        if backend == "torch":
            raise PneumoError(
                f"{path} is an ONNX export; this needs the PyTorch checkpoint it was exported from (a run or checkpoint folder)"
            )
        from pneumo.inference.onnx_backend import OnnxModel

        model: Model = OnnxModel.load(target)
        return model.with_feature_check() if checks else model
    folder = _checkpoint_folder(target)
    if folder is None:
        raise PneumoError(
            f"{path} is not a pneumo model: expected a run folder, a folder with weights.safetensors and meta.json, or an exported .onnx (`pneumo export`)"
        )
    if backend in ("auto", "onnx"):
        export = _own_export(folder)
        if export is not None:
            export.checkpoint = folder
            return export.with_feature_check() if checks else export
        if backend == "onnx":
            raise PneumoError(
                f"{folder} has no export of its own ({BUNDLED_ONNX} made from this checkpoint): `pneumo export --model {folder} --out {folder / BUNDLED_ONNX}`"
            )
    if importlib.util.find_spec("torch") is None:
        raise PneumoError(
            f"{folder} is a PyTorch checkpoint and PyTorch is not installed: run its export instead (`pneumo export --model {folder} "
            f"--out {folder / BUNDLED_ONNX}` where PyTorch is, then this works), or pip install 'pneumo[train]'"
        )
    from pneumo.inference.torch_backend import TorchModel

    model = TorchModel.load(folder, device=device)
    return model.with_feature_check() if checks else model
