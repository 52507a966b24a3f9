"""Data-parallel training under torchrun: two CPU processes (gloo) train as one process with the same global batch.

The two runs can only agree to float precision when every image's gradient is independent of
the others and of the process it lands on: no BatchNorm (each process normalises with its own
share of the batch, see the README), no dropout and no augmentation (each process draws its
own). Hence a test network without either. What still differs is the order of float32 sums
(two batch means averaged by the all-reduce instead of one mean over the batch), which moves
a gradient by a few units in the last place: after 12 SGD steps the weights differ by ~1e-8
(Adam: ~2e-7), as much as one process differs from itself on 1 thread instead of 2. WEIGHT_TOLERANCE
leaves room for other CPUs' kernels, and is far below what a real fault makes (a summed instead
of averaged gradient, a wrong shard or a missing all-reduce move the weights by 1e-3 or more).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pneumo.config import load_config
from pneumo.data.loader import ArrayBatches
from pneumo.errors import PneumoError
from pneumo.inference.torch_backend import load_checkpoint
from pneumo.models import ModelSpec, registry
from pneumo.training.loop import train

pytestmark = pytest.mark.slow  # starts torchrun jobs

WEIGHT_TOLERANCE = 1e-5  # max |w_2 processes - w_1 process| after 2 epochs
METRIC_TOLERANCE = 1e-5  # relative, on losses and ROC AUC


def _net_without_batchnorm(in_chans: int, num_outputs: int, image_size: int, dropout: float) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_chans, 8, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_outputs),
    )


PLAIN_NET = ModelSpec("ddp_test_net", _net_without_batchnorm, 32, 0.5, 0.25, "a test network: no BatchNorm, no dropout")
# the seed recipe has no augmentation, EMA or dropout; SGD, unlike Adam, shows a wrongly scaled gradient
# fp32 (amp=false): bf16 autocast rounds a half batch differently from a whole one
EXACT = [
    "model=ddp_test_net",
    "image_size=32",
    "epochs=2",
    "batch_size=16",
    "optimizer=sgd",
    "lr=0.01",
    "schedule=cosine",
    "warmup_epochs=0.5",
    "select=last",
    "threshold=0.5",
    "amp=false",
]


def _quiet(**kwargs: object) -> dict:
    return {"progress": False, "n_boot": 50, **kwargs}


def _torchrun(tmp_path: Path, *args: str, entry: list[str]) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --nproc-per-node 2 ENTRY ARGS` on loopback only, on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", **({"GLOO_SOCKET_IFNAME": "lo"} if sys.platform == "linux" else {})}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        *entry,
        *args,
    ]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _set(overrides: list[str]) -> list[str]:
    """`--set KEY=VALUE` for each override."""
    return [arg for override in overrides for arg in ("--set", override)]


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_two_processes_train_as_one_with_the_same_global_batch(small_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._REGISTRY, PLAIN_NET.name, PLAIN_NET)
    one = train(load_config("seed", [f"data={small_folder}", *EXACT]), out=tmp_path / "one", **_quiet())

    # torchrun runs a script that registers the test network, then the `pneumo` command
    entry = tmp_path / "entry.py"
    entry.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pneumo.cli import main\nfrom pneumo.models.registry import register_model\nfrom test_distributed import PLAIN_NET\n"
        "register_model(PLAIN_NET)\nmain()\n"
    )
    _torchrun(
        tmp_path,
        "train",
        "--config",
        "seed",
        *_set([f"data={small_folder}", *EXACT]),
        "--out",
        str(tmp_path / "two"),
        "--quiet",
        entry=[str(entry)],
    )

    a = load_file(str(tmp_path / "one" / "model" / "weights.safetensors"))
    b = load_file(str(tmp_path / "two" / "model" / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < WEIGHT_TOLERANCE
    assert (tmp_path / "one" / "split.csv").read_text() == (tmp_path / "two" / "split.csv").read_text()
    h1, h2 = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert [r["epoch"] for r in h2] == ["1", "2"]
    for r1, r2 in zip(h1, h2, strict=True):
        assert float(r2["lr"]) == pytest.approx(float(r1["lr"]), rel=1e-9)  # the same number of steps
        for key in ("train_loss", "val_loss", "train_roc_auc", "val_roc_auc"):
            assert float(r2[key]) == pytest.approx(float(r1[key]), rel=METRIC_TOLERANCE), key
    report = json.loads((tmp_path / "two" / "val_report.json").read_text())
    assert report["roc_auc"] == pytest.approx(one.report["roc_auc"], rel=METRIC_TOLERANCE)
    assert report["machine"].endswith("x 2 processes") and "processes" not in one.report["machine"]


def test_torchrun_runs_the_pneumo_command_with_rank_0_alone_writing_and_logging(small_folder: Path, tmp_path: Path) -> None:
    # the CPU recipe: BatchNorm, dropout, augmentation, EMA and BatchNorm recalibration, all under DDP
    overrides = [f"data={small_folder}", "image_size=32", "epochs=2", "batch_size=16", "limit=64", "bn_recalibrate=32"]
    done = _torchrun(tmp_path, "train", "--config", "cpu", *_set(overrides), "--out", str(tmp_path / "run"), entry=["-m", "pneumo"])

    assert done.stderr.count("torchrun: 2 processes, 8 images each per step") == 1  # the log, on stderr (not --quiet: it leaves it out)
    assert done.stderr.count("epoch   2/2") == 1  # one log, rank 0's
    run = tmp_path / "run"
    assert {"config.yaml", "split.csv", "history.csv", "history.png", "val_report.json", "model", "checkpoints"} <= {
        p.name for p in run.iterdir()
    }
    assert [r["epoch"] for r in _history(run)] == ["1", "2"]
    assert load_checkpoint(run).meta.config["batch_size"] == 16  # the global batch
    assert json.loads((run / "val_report.json").read_text())["machine"].endswith("x 2 processes")
    assert (run / "checkpoints" / "last" / "state.json").exists()


def test_each_process_takes_its_share_of_the_batch_one_process_would_take() -> None:
    n, per_rank, world = 37, 4, 3
    images, targets = torch.zeros(n, 2, 2, dtype=torch.uint8), torch.arange(n)
    whole = ArrayBatches(images, targets, per_rank * world, shuffle=True, seed=5, drop_last=True)
    shares = [ArrayBatches(images, targets, per_rank, shuffle=True, seed=5, drop_last=True, rank=r, world_size=world) for r in range(world)]
    for _ in range(2):  # the same order every epoch, on every process
        per_process = [[y for _, y in share] for share in shares]
        assert all(len(steps) == len(whole) == 3 for steps in per_process)
        for i, (_, y) in enumerate(whole):
            together = torch.cat([steps[i] for steps in per_process])
            assert all(len(steps[i]) == per_rank for steps in per_process)
            assert sorted(together.tolist()) == sorted(y.tolist())
    with pytest.raises(ValueError, match="rank 3 is not one of the 3 processes"):
        ArrayBatches(images, targets, 4, rank=3, world_size=3)


def test_what_torchrun_refuses_before_any_work(small_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config("seed", [f"data={small_folder}", "image_size=32", "epochs=1", "batch_size=15"])
    with pytest.raises(PneumoError, match=r"batch_size 15 is the global batch and must split evenly over the 2 processes.*batch_size=16"):
        train(cfg, out=tmp_path / "odd", **_quiet())
    with pytest.raises(PneumoError, match=r"cannot be continued under torchrun.*pneumo train --resume RUN_DIR"):
        train(None, out=tmp_path / "odd", **_quiet(resume=True))
    with pytest.raises(PneumoError, match="WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not"):
        train(
            load_config("seed", [f"data={small_folder}", "image_size=32", "epochs=1", "batch_size=16"]), out=tmp_path / "bare", **_quiet()
        )
    assert not (tmp_path / "odd").exists() and not (tmp_path / "bare").exists()
