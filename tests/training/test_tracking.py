"""pneumo.training.tracking: a run's epochs, report, pictures and model reach TensorBoard and MLflow, for real."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pneumo.config import load_config
from pneumo.training.loop import train
from pneumo.training.tracking import open_trackers

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow  # a real training run reported to both


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory, small_folder: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = load_config("seed", [f"data={small_folder}", "image_size=32", "epochs=2", "batch_size=16", "limit=80"])
    here = os.getcwd()
    os.chdir(folder)  # MLflow keeps artifacts in ./mlruns beside a local store
    try:
        train(cfg, out=folder / "run", progress=False, n_boot=20, mlflow=uri, tensorboard=True)
        yield folder / "run", uri
    finally:
        os.chdir(here)


def test_tensorboard_has_every_epoch_and_the_pictures(tracked_run: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tracked_run
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [1, 2]
    assert [e.step for e in events.Scalars("lr")] == [1, 2] and "train/accuracy" in events.Tags()["scalars"]
    assert events.Scalars("final/roc_auc")[0].value == pytest.approx(
        __import__("json").loads((run / "val_report.json").read_text())["roc_auc"]
    )
    assert {"history", "roc", "confusion", "reliability"} <= set(events.Tags()["images"])


def test_mlflow_has_params_metrics_pictures_and_the_model(tracked_run: tuple[Path, str]) -> None:
    run, uri = tracked_run
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("pneumo").experiment_id])
    assert found.data.params["model"] == "seed_cnn" and found.data.params["augment.rotate_deg"] == "0.0"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val_loss")] == [1, 2]
    assert "final_roc_auc" in found.data.metrics and found.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"history.png", "val_report.json", "model"} <= artifacts
    assert {Path(a.path).name for a in client.list_artifacts(found.info.run_id, "model")} >= {"weights.safetensors", "meta.json"}


def test_a_failing_tracker_warns_once_and_the_run_goes_on(tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    tracker = open_trackers(f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", tensorboard=False)
    tracker.start({"a": 1}, tmp_path, 1)
    tracker.epoch({"epoch": 1, "val_loss": 0.5})
    tracker.finish({"roc_auc": 0.9}, tmp_path)
    tracker.close()
    assert (
        len(pneumo_log.messages) == 1
        and pneumo_log.records[0].levelname == "WARNING"
        and pneumo_log.messages[0].startswith("MLflow stopped recording")
        and "the run goes on" in pneumo_log.messages[0]
    )
