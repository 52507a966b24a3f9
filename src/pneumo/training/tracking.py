"""Experiment tracking: a run's epochs, its final report, pictures and model, in the tools researchers watch.

TensorBoard scalars and images go to `RUN/tensorboard/` whenever `tensorboard` is installed
(`tensorboard --logdir runs` shows every run). MLflow logs params, metrics per epoch, the
final metrics, the pictures, the report and the model folder when asked (`pneumo train
--mlflow [URI]`); its default store is `sqlite:///mlflow.db` in the working directory, which
`mlflow ui` opens. Both are in the `pneumo[track]` extra. A tracker failing mid-run never stops
training: it says so once and goes quiet.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import PneumoError

__all__ = ["DEFAULT_MLFLOW_URI", "PICTURES", "Tracker", "open_trackers"]

logger = logging.getLogger(__name__)

DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"
PICTURES = ("history.png", "roc.png", "confusion.png", "reliability.png")  # what a finished run folder shows
_FINAL_KEYS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "loss",
    "ece",
    "threshold",
    "epoch",
    "seconds_total",
)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"augment": {"scale": 0.1}} -> {"augment.scale": 0.1}: trackers take flat params."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _numbers(row: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}


class Tracker:
    """Where a run reports besides its folder; this base reports nowhere."""

    name = "none"

    def start(self, config: Mapping[str, Any], run_dir: Path, first_epoch: int) -> None: ...

    def epoch(self, row: Mapping[str, Any]) -> None: ...

    def finish(self, report: Mapping[str, Any], run_dir: Path) -> None: ...

    def close(self) -> None: ...


class _TensorBoard(Tracker):
    name = "TensorBoard"

    def start(self, config: Mapping[str, Any], run_dir: Path, first_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_epoch)  # a resumed run rewrites its lost epochs
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in _flat(config).items()), first_epoch)

    def epoch(self, row: Mapping[str, Any]) -> None:
        step = int(row["epoch"])
        for key, value in _numbers(row).items():
            if key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key, value, step)
        self.writer.flush()

    def finish(self, report: Mapping[str, Any], run_dir: Path) -> None:
        from PIL import Image

        step = int(report.get("epoch") or 0)
        for key, value in _numbers({k: report.get(k) for k in _FINAL_KEYS}).items():
            self.writer.add_scalar(f"final/{key}", value, step)
        for name in PICTURES:
            if (run_dir / name).is_file():
                with Image.open(run_dir / name) as picture:
                    self.writer.add_image(name.removesuffix(".png"), np.asarray(picture.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow(Tracker):
    name = "MLflow"

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def start(self, config: Mapping[str, Any], run_dir: Path, first_epoch: int) -> None:
        for noisy in ("mlflow", "alembic"):  # their INFO lines would interleave with the run's
            logging.getLogger(noisy).setLevel(logging.WARNING)
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment("pneumo")
        self.run = mlflow.start_run(run_name=run_dir.name, tags={"run_dir": str(run_dir.resolve()), "first_epoch": str(first_epoch)})
        params = {k: ("" if v is None else str(v))[:500] for k, v in _flat(config).items()}
        mlflow.log_params(params)

    def epoch(self, row: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics({k: v for k, v in _numbers(row).items() if k != "epoch"}, step=int(row["epoch"]))

    def finish(self, report: Mapping[str, Any], run_dir: Path) -> None:
        self.mlflow.log_metrics({f"final_{k}": v for k, v in _numbers({k: report.get(k) for k in _FINAL_KEYS}).items()})
        for name in (*PICTURES, "val_report.json", "config.yaml", "history.csv", "split.csv"):
            if (run_dir / name).is_file():
                self.mlflow.log_artifact(str(run_dir / name))
        if (run_dir / "model").is_dir():
            self.mlflow.log_artifacts(str(run_dir / "model"), artifact_path="model")

    def close(self) -> None:
        self.mlflow.end_run()


class _Guarded(Tracker):
    """One tracker whose failures are reported once and then ignored: tracking is a view of the run, not the run."""

    def __init__(self, inner: Tracker) -> None:
        self.inner, self.broken = inner, False

    def _call(self, what: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            getattr(self.inner, what)(*args)
        except Exception as exc:  # noqa: BLE001 - any tracker failure: the run goes on
            self.broken = True
            logger.warning(f"{self.inner.name} stopped recording ({type(exc).__name__}: {str(exc)[:200]}); the run goes on")

    def start(self, config: Mapping[str, Any], run_dir: Path, first_epoch: int) -> None:
        self._call("start", config, run_dir, first_epoch)

    def epoch(self, row: Mapping[str, Any]) -> None:
        self._call("epoch", row)

    def finish(self, report: Mapping[str, Any], run_dir: Path) -> None:
        self._call("finish", report, run_dir)

    def close(self) -> None:
        self._call("close")


class _All(Tracker):
    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def start(self, config: Mapping[str, Any], run_dir: Path, first_epoch: int) -> None:
        for t in self.trackers:
            t.start(config, run_dir, first_epoch)

    def epoch(self, row: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.epoch(row)

    def finish(self, report: Mapping[str, Any], run_dir: Path) -> None:
        for t in self.trackers:
            t.finish(report, run_dir)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def open_trackers(mlflow_uri: str | None, tensorboard: bool | None = None) -> Tracker:
    """The trackers a run reports to: TensorBoard when installed (or as `tensorboard` says),
    MLflow when given a URI ("" for the default local store)."""
    trackers: list[Tracker] = []
    if tensorboard is None:
        tensorboard = importlib.util.find_spec("tensorboard") is not None
    if tensorboard:
        trackers.append(_Guarded(_TensorBoard()))
    if mlflow_uri is not None:
        if importlib.util.find_spec("mlflow") is None:
            raise PneumoError("--mlflow needs MLflow: pip install 'pneumo[track]' (or mlflow)")
        trackers.append(_Guarded(_MLflow(mlflow_uri or DEFAULT_MLFLOW_URI)))
    return _All(trackers)
