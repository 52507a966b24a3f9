"""CUDA graphs for the training step: never used without a CUDA GPU, and a model handed to them is
given back as it was (its content crop, statistics and gradients) whether recording works or not.

On a machine with CUDA the last test checks that the replayed step computes what eager PyTorch does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pneumo.config import load_config
from pneumo.models import create_model
from pneumo.models.framing import content_crop_of
from pneumo.training.cuda_graphs import cuda_graphed
from pneumo.training.parts import _step_model

SIZE = 32


def _net(crop: str = "none") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("seed_cnn", image_size=SIZE, crop=crop).to(memory_format=torch.channels_last)


def test_a_cpu_run_never_records_graphs_though_the_config_asks_for_them(small_folder: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    """`cuda_graphs: true` is every recipe's default: on a CPU the step runs the model itself, and says nothing."""
    config = load_config("seed", [f"data={small_folder}", f"image_size={SIZE}", "batch_size=16"])
    assert config.cuda_graphs
    net = _net()
    assert _step_model(config, net, n_train=96, use_amp=False, device=torch.device("cpu")) is net
    assert pneumo_log.messages == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="what happens without CUDA")
def test_recording_without_cuda_fails_and_leaves_the_model_as_it_was() -> None:
    """Called by hand on a CPU, recording raises; the content crop's hook, the BatchNorm statistics,
    the weights and the gradients are what they were (no warm-up pass has touched them)."""
    net = _net(crop="content")
    hooks = dict(net._forward_pre_hooks)
    assert hooks and content_crop_of(net) is not None
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises((RuntimeError, AssertionError)):
        cuda_graphed(net, (4, 1, SIZE, SIZE), use_amp=False)
    assert dict(net._forward_pre_hooks) == hooks  # lifted for recording, put back on the way out
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def _plain_net() -> torch.nn.Module:
    """Convolutions, BatchNorm and a head, no dropout: eager and replayed steps can be compared number for number."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 1),
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_replayed_step_computes_what_eager_pytorch_does() -> None:  # pragma: no cover - CPU machines skip it
    device = torch.device("cuda")
    torch.manual_seed(0)
    eager = _plain_net().to(device).to(memory_format=torch.channels_last)
    net = _plain_net().to(device).to(memory_format=torch.channels_last)
    net.load_state_dict(eager.state_dict())
    graphed = cuda_graphed(net, (4, 1, SIZE, SIZE), use_amp=False)
    # the warm-up passes left no trace: statistics as before, no gradients
    assert all(torch.equal(a, b) for a, b in zip(eager.state_dict().values(), net.state_dict().values()))
    assert all(p.grad is None for p in net.parameters())

    x = torch.randn(4, 1, SIZE, SIZE, device=device).contiguous(memory_format=torch.channels_last)
    eager.train()
    graphed.train()
    expected = eager(x)
    expected.sum().backward()
    out = graphed(x)
    out.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-4)
    for a, b in zip(net.parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4)
    # the replay moved the BatchNorm statistics as the eager step did, and eval mode runs the ordinary forward
    for a, b in zip(net.buffers(), eager.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    eager.eval()
    graphed.eval()
    with torch.no_grad():
        torch.testing.assert_close(graphed(x), eager(x), rtol=1e-3, atol=1e-4)
