"""The parts of a training step besides the network: device choice, class weights, the optimiser a
config names, the learning-rate schedule over a whole run, and the EMA step.

tests/training/test_loop.py already checks the notebook's two-class weights, four points of the
schedule, the EMA warm-up and the bf16 decision per CPU flag; these check the rest of the contract.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from pneumo.config import load_config
from pneumo.errors import PneumoError
from pneumo.training.optim import (
    bf16_autocast_helps,
    class_weights,
    ema_update,
    lr_factor,
    make_optimizer,
    pick_device,
)


def _net() -> torch.nn.Module:
    """Convolution, BatchNorm and a linear head: parameters with and without weight decay's usual exceptions."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 1),
    )


# --- device --------------------------------------------------------------------------------------


def test_cpu_is_always_cpu_and_auto_follows_what_the_machine_has() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
def test_asking_for_cuda_without_a_gpu_says_how_to_train_on_the_cpu() -> None:
    with pytest.raises(PneumoError, match=r"^config asks for device 'cuda' but no CUDA GPU is available; use --set device=cpu$"):
        pick_device("cuda")


def test_bf16_autocast_is_never_chosen_for_devices_other_than_cpu_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a CPU's flags are read: another device type gets fp32 even on a CPU with native bf16."""
    from pneumo.training import optim

    monkeypatch.setattr(optim, "_cpu_flags", lambda: {"avx512_bf16", "amx_bf16"})
    assert bf16_autocast_helps(torch.device("cpu"))
    assert not bf16_autocast_helps(torch.device("meta"))


# --- class weights -------------------------------------------------------------------------------


def test_pathogen_class_weights_follow_n_over_k_n_c() -> None:
    targets = np.array([0] * 10 + [1] * 30 + [2] * 20)
    weights = class_weights(targets, 3, "class_weights")
    assert weights.dtype == torch.float32 and weights.shape == (3,)
    np.testing.assert_allclose(weights.numpy(), [60 / (3 * 10), 60 / (3 * 30), 60 / (3 * 20)], rtol=1e-6)
    # the weighted count of every class is the same: each class pulls equally on the loss
    weighted = weights.numpy() * np.bincount(targets)
    np.testing.assert_allclose(weighted, np.full(3, len(targets) / 3), rtol=1e-6)


def test_a_class_absent_from_the_training_split_gets_a_finite_weight() -> None:
    """A class with no image (a tiny `limit`) must not divide by zero: it is counted as one image."""
    weights = class_weights(np.array([0, 0, 0, 1]), 3, "class_weights")
    assert torch.isfinite(weights).all()
    assert weights[2].item() == pytest.approx(4 / 3)
    assert class_weights(np.array([0, 0, 0, 1]), 3, "none").tolist() == [1.0, 1.0, 1.0]


# --- optimiser -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
def test_the_config_names_the_optimiser_and_every_knob_reaches_it(name: str, kind: type) -> None:
    config = load_config("cpu", [f"optimizer={name}", "lr=0.02", "weight_decay=0.03", "adam_eps=1e-6", "momentum=0.8"])
    net = _net()
    optimizer = make_optimizer(config, net)
    assert type(optimizer) is kind
    # one group over every parameter of the network, each exactly once (no weight-decay exceptions)
    assert len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters()]
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.03
    if name == "sgd":
        assert group["momentum"] == 0.8 and group["nesterov"] is True
    else:
        assert group["eps"] == 1e-6 and group["fused"] is True


def test_adamw_decays_weights_apart_from_the_gradient_and_adam_through_it() -> None:
    """With a zero gradient Adam's L2 decay goes through its normalised step (a full lr step),
    AdamW's is lr * wd * w: the choice between them is a real difference, not a name."""
    out = {}
    for name in ("adam", "adamw"):
        param = torch.nn.Parameter(torch.ones(1))
        config = load_config("cpu", [f"optimizer={name}", "lr=0.1", "weight_decay=0.5"])
        optimizer = make_optimizer(config, torch.nn.ParameterList([param]))
        param.grad = torch.zeros(1)
        optimizer.step()
        out[name] = param.item()
    assert out["adamw"] == pytest.approx(1 - 0.1 * 0.5, abs=1e-6)
    assert out["adam"] == pytest.approx(1 - 0.1, abs=1e-4)


# --- schedule ------------------------------------------------------------------------------------


def _lrs(epochs: int, steps_per_epoch: int, warmup_epochs: float, schedule: str, lr: float = 1e-3) -> list[float]:
    """The learning rate of every step of a run, as LambdaLR applies lr_factor in the training loop."""
    total, warmup = epochs * steps_per_epoch, int(warmup_epochs * steps_per_epoch)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, schedule))
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_with_warmup_rises_linearly_then_falls_to_zero_over_the_run() -> None:
    lrs = np.array(_lrs(epochs=5, steps_per_epoch=8, warmup_epochs=1, schedule="cosine"))
    warm, rest = lrs[:8], lrs[8:]
    np.testing.assert_allclose(warm, 1e-3 * np.arange(1, 9) / 8, rtol=1e-9)  # 1/8, 2/8, ..., the full rate on the last warm-up step
    assert rest[0] == pytest.approx(1e-3)  # the decay starts from the full rate
    assert np.all(np.diff(rest) < 0)  # then falls at every step
    assert rest[len(rest) // 2] == pytest.approx(0.5e-3, rel=1e-9)  # half way through the decay: half the rate
    assert 0 < rest[-1] < 1e-3 * 0.01  # the last step's rate is almost zero, never negative


def test_constant_schedule_keeps_the_rate_after_warmup() -> None:
    lrs = _lrs(epochs=3, steps_per_epoch=4, warmup_epochs=0.5, schedule="constant")
    assert lrs[:2] == pytest.approx([0.5e-3, 1e-3])
    assert lrs[2:] == pytest.approx([1e-3] * 10)


def test_no_warmup_starts_at_the_full_rate_and_past_the_end_stays_at_zero() -> None:
    assert lr_factor(0, 10, 0, "cosine") == 1.0
    assert lr_factor(0, 10, 0, "constant") == 1.0
    assert lr_factor(10, 10, 0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(25, 10, 0, "cosine") == pytest.approx(0.0, abs=1e-12)  # not climbing back up the cosine


def test_warmup_over_the_whole_run_never_divides_by_zero() -> None:
    """warmup_epochs may equal epochs (the config allows it): every step is warm-up."""
    factors = [lr_factor(s, 6, 6, "cosine") for s in range(6)]
    assert factors == pytest.approx([(s + 1) / 6 for s in range(6)])
    assert math.isfinite(lr_factor(6, 6, 6, "cosine"))


# --- EMA -----------------------------------------------------------------------------------------


def test_ema_of_a_network_averages_weights_and_buffers_and_copies_counters() -> None:
    """Through AveragedModel, as the training loop uses it: BatchNorm's running statistics are averaged
    like weights, its integer counter follows the network."""
    torch.manual_seed(0)
    net = _net()
    ema = AveragedModel(net, multi_avg_fn=ema_update(0.5), use_buffers=True)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()
    net(torch.randn(4, 1, 6, 6))  # moves the running statistics and counts a batch
    ema.update_parameters(net)  # the first update copies
    ema.update_parameters(net)  # the second averages with decay min(0.5, (1 + 1) / (10 + 1))
    averaged, now = ema.module.state_dict(), net.state_dict()
    for key, value in averaged.items():
        if key.endswith("num_batches_tracked"):
            assert value.item() == now[key].item() == 1
        else:
            assert torch.allclose(value, now[key]), key  # both updates saw the same weights
    # a third update with changed weights moves the average only part of the way
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update_parameters(net)
    d = min(0.5, 3 / 12)
    weight = "0.weight"
    expected = d * (first[weight] + 1) + (1 - d) * (first[weight] + 2)
    assert torch.allclose(ema.module.state_dict()[weight], expected, atol=1e-6)
