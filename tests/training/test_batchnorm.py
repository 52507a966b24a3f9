"""BatchNorm statistics recomputed from training films before validation: exact, replacing what was
there, and leaving the network as it was found otherwise.

test_loop.py checks the statistics of a single BatchNorm over uniform images with dropout; these use
real films through convolutions, EMA weights and the bundled architecture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from pneumo.data.preprocess import load_image, normalise
from pneumo.models import create_model
from pneumo.training.batchnorm import recalibrate_batchnorm
from pneumo.training.optim import ema_update
from tests.conftest import pick

SIZE = 32
MEAN, STD = 0.5, 0.25


@pytest.fixture(scope="module")
def films(shared_data: Path) -> torch.Tensor:
    """Twelve real films of both classes, uint8 [12, 32, 32]."""
    paths = pick("NORMAL", 6) + pick("PNEUMONIA", 6)
    return torch.from_numpy(np.stack([load_image(p, SIZE) for p in paths]))


def _conv_bn() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3, momentum=0.01), torch.nn.ReLU(), torch.nn.Conv2d(3, 2, 3), torch.nn.BatchNorm2d(2)
    )


def _first_layer_outputs(net: torch.nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net[0](normalise(images, MEAN, STD))


def test_running_statistics_become_those_of_the_films(films: torch.Tensor) -> None:
    net = _conv_bn()
    bn = net[1]
    bn.running_mean.fill_(100.0)  # stale statistics far from the data: replaced, not blended
    bn.running_var.fill_(1e-3)
    recalibrate_batchnorm(net, films, MEAN, STD, batch_size=len(films))  # one batch: the statistics of all films
    features = _first_layer_outputs(net, films)
    per_channel = features.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(bn.running_mean, per_channel.mean(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, per_channel.var(1), rtol=1e-4, atol=1e-6)  # unbiased, as BatchNorm keeps it
    assert bn.num_batches_tracked.item() == 1


def test_several_batches_give_the_plain_average_of_their_statistics(films: torch.Tensor) -> None:
    """Equal batches averaged with equal weight (momentum None), whatever momentum the layer had."""
    net = _conv_bn()
    recalibrate_batchnorm(net, films, MEAN, STD, batch_size=4)
    bn = net[1]
    batches = [_first_layer_outputs(net, b).transpose(0, 1).reshape(3, -1) for b in films.split(4)]
    torch.testing.assert_close(bn.running_mean, torch.stack([b.mean(1) for b in batches]).mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, torch.stack([b.var(1) for b in batches]).mean(0), rtol=1e-4, atol=1e-6)
    assert bn.num_batches_tracked.item() == 3
    assert bn.momentum == 0.01 and net[4].momentum == 0.1  # each layer's own momentum back


def test_the_normalisation_given_is_the_one_the_network_sees(films: torch.Tensor) -> None:
    """The statistics are measured on (x/255 - mean) / std: another normalisation gives other statistics."""
    a, b = _conv_bn(), _conv_bn()
    recalibrate_batchnorm(a, films, MEAN, STD, batch_size=len(films))
    recalibrate_batchnorm(b, films, 0.0, 1.0, batch_size=len(films))
    assert not torch.allclose(a[1].running_mean, b[1].running_mean)
    features = b[0](normalise(films, 0.0, 1.0)).detach().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(b[1].running_mean, features.mean(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_the_mode_weights_and_gradients_are_left_as_they_were(films: torch.Tensor, training: bool) -> None:
    net = _conv_bn()
    net.train(training)
    weights = {k: v.clone() for k, v in net.named_parameters()}
    recalibrate_batchnorm(net, films, MEAN, STD, batch_size=5)
    assert net.training is training and all(m.training is training for m in net.modules())
    assert all(torch.equal(weights[k], v) and v.grad is None for k, v in net.named_parameters())


def test_a_network_without_batchnorm_is_not_run_at_all(films: torch.Tensor) -> None:
    class Refuses(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("a network without BatchNorm has no statistics to measure")

    net = Refuses().train(False)
    recalibrate_batchnorm(net, films, MEAN, STD)
    assert not net.training


def test_ema_weights_get_statistics_of_their_own(films: torch.Tensor) -> None:
    """The averaged network's statistics are measured with its own weights, not copied from the raw network's."""
    torch.manual_seed(0)
    raw = create_model("seed_cnn", image_size=SIZE).to(memory_format=torch.channels_last)
    ema = AveragedModel(raw, multi_avg_fn=ema_update(0.9), use_buffers=True)
    with torch.no_grad():
        for p in raw.parameters():
            p.mul_(1.5)  # the raw weights move on; the average stays behind
    recalibrate_batchnorm(raw, films, MEAN, STD)
    recalibrate_batchnorm(ema.module, films, MEAN, STD)
    raw_bn = [m for m in raw.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    ema_bn = [m for m in ema.module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert raw_bn and len(raw_bn) == len(ema_bn)
    assert any(not torch.allclose(a.running_mean, b.running_mean) for a, b in zip(raw_bn, ema_bn))
    # measured again, the same films give the same statistics: nothing random (dropout is off)
    before = [b.running_var.clone() for b in ema_bn]
    recalibrate_batchnorm(ema.module, films, MEAN, STD)
    assert all(torch.allclose(x, b.running_var) for x, b in zip(before, ema_bn))
    # and the network in eval mode now normalises its first BatchNorm's input to mean 0 over the films
    first = ema_bn[0]
    captured: list[torch.Tensor] = []
    hook = first.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    ema.module.eval()
    with torch.no_grad():
        ema.module(normalise(films, MEAN, STD).contiguous(memory_format=torch.channels_last))
    hook.remove()
    normalised = (captured[0] - first.bias.view(1, -1, 1, 1)) / first.weight.view(1, -1, 1, 1)
    assert normalised.mean(dim=(0, 2, 3)).abs().max().item() < 1e-3
