"""The MONAI builders: one logit per film at any input size, the stride-2 stem, width multipliers, depth and dropout.

The builders are called as the registry calls them (`build(in_chans=, num_outputs=, image_size=, dropout=)`),
at small input sizes so the whole file runs in seconds on a CPU; one test feeds real films through the
project's preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pneumo.data.preprocess import load_image, normalise
from pneumo.models.monai_nets import monai_densenet121, monai_resnet
from tests.conftest import pick

pytestmark = pytest.mark.slow  # whole-network passes over many cases: the full suite runs them, the fast loop leaves them out


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _stages(net: nn.Module) -> list[int]:
    return [len(getattr(net, f"layer{i}")) for i in range(1, 5)]


@pytest.fixture(scope="module")
def films(shared_data: Path) -> np.ndarray:
    """Four real films (two per class) as uint8 [4, 64, 64], decoded and resized the one way pneumo does."""
    return np.stack([load_image(f, 64) for f in pick("NORMAL", 2, offset=9) + pick("PNEUMONIA", 2, offset=9)])


def test_monai_resnet_returns_a_builder_and_builds_fresh_networks() -> None:
    build = monai_resnet(18, 0.25)
    assert callable(build)
    a, b = build(in_chans=1, num_outputs=1, image_size=224, dropout=0.0), build(in_chans=1, num_outputs=1, image_size=224, dropout=0.0)
    assert a is not b and not torch.equal(a.conv1.weight, b.conv1.weight)  # freshly initialised, sharing nothing


@pytest.mark.parametrize("size", [32, 97, 224])
def test_resnet_gives_one_logit_per_film_at_any_input_size(size: int) -> None:
    """Adaptive pooling before the classifier: the input size is not baked into the network."""
    net = monai_resnet(18, 0.25)(in_chans=1, num_outputs=1, image_size=224, dropout=0.0).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, size, size))
    assert out.shape == (2, 1) and torch.isfinite(out).all()


def test_the_stem_is_he_et_als_7x7_stride_2() -> None:
    net = monai_resnet(18, 0.25)(in_chans=1, num_outputs=1, image_size=224, dropout=0.0)
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2) and net.conv1.in_channels == 1
    features = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool).eval()
    with torch.no_grad():
        assert features(torch.zeros(1, 1, 64, 64)).shape[-2:] == (16, 16)  # stride 2 stem + stride 2 max-pool: /4


@pytest.mark.parametrize(("width", "stem", "head"), [(1.0, 64, 512), (0.5, 32, 256), (0.25, 16, 128)])
def test_width_multiplier_narrows_every_stage(width: float, stem: int, head: int) -> None:
    net = monai_resnet(18, width)(in_chans=1, num_outputs=1, image_size=224, dropout=0.0)
    assert net.conv1.out_channels == stem and net.fc.in_features == head
    assert net.layer4[-1].conv2.out_channels == head


def test_halving_the_width_quarters_the_parameters() -> None:
    """Convolution weights scale with in x out channels, so each halving leaves about a quarter."""
    full, half, quarter = (_count(monai_resnet(18, w)(in_chans=1, num_outputs=1, image_size=224, dropout=0.0)) for w in (1.0, 0.5, 0.25))
    assert 3.8 < full / half < 4.2 and 3.8 < half / quarter < 4.2
    # the sizes the registry advertises for these widths
    assert round(full / 1e6, 1) == 11.2 and round(half / 1e6, 1) == 2.8 and round(quarter / 1e6, 1) == 0.7


@pytest.mark.parametrize(("depth", "stages"), [(10, [1, 1, 1, 1]), (18, [2, 2, 2, 2]), (34, [3, 4, 6, 3])])
def test_depth_picks_the_number_of_blocks_a_stage(depth: int, stages: list[int]) -> None:
    net = monai_resnet(depth, 0.25)(in_chans=1, num_outputs=1, image_size=224, dropout=0.0)
    assert _stages(net) == stages


def test_resnet10_half_has_the_size_the_registry_advertises() -> None:
    assert round(_count(monai_resnet(10, 0.5)(in_chans=1, num_outputs=1, image_size=224, dropout=0.0)) / 1e6, 1) == 1.2


@pytest.mark.parametrize(("in_chans", "num_outputs"), [(1, 1), (3, 1), (1, 3)])
def test_channels_and_outputs_are_the_callers(in_chans: int, num_outputs: int) -> None:
    net = monai_resnet(18, 0.25)(in_chans=in_chans, num_outputs=num_outputs, image_size=64, dropout=0.0).eval()
    assert net.conv1.in_channels == in_chans
    with torch.no_grad():
        assert net(torch.randn(2, in_chans, 64, 64)).shape == (2, num_outputs)


def test_image_size_does_not_change_the_resnet() -> None:
    """The builders accept the registry's image_size but need none: the same weights serve every size."""
    build = monai_resnet(18, 0.25)
    small, large = (build(in_chans=1, num_outputs=1, image_size=s, dropout=0.0) for s in (64, 512))
    assert {k: v.shape for k, v in small.state_dict().items()} == {k: v.shape for k, v in large.state_dict().items()}


def test_dropout_goes_before_the_classifier_and_only_when_asked() -> None:
    build = monai_resnet(18, 0.25)
    plain = build(in_chans=1, num_outputs=2, image_size=64, dropout=0.0)
    assert isinstance(plain.fc, nn.Linear) and not any(isinstance(m, nn.Dropout) for m in plain.modules())
    torch.manual_seed(0)
    reference = build(in_chans=1, num_outputs=2, image_size=64, dropout=0.0).eval()
    torch.manual_seed(0)
    dropped = build(in_chans=1, num_outputs=2, image_size=64, dropout=0.4)
    assert isinstance(dropped.fc, nn.Sequential) and isinstance(dropped.fc[0], nn.Dropout) and dropped.fc[0].p == 0.4
    assert isinstance(dropped.fc[1], nn.Linear) and dropped.fc[1].out_features == 2
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(dropped.eval()(x), reference(x), atol=1e-6)  # same weights; dropout is off in eval
        dropped.train()
        torch.manual_seed(1)
        noisy = dropped(x)
    assert not torch.allclose(noisy, reference(x), atol=1e-4)  # and on in training


def test_densenet121_gives_one_logit_per_film_and_takes_the_callers_channels() -> None:
    net = monai_densenet121(in_chans=1, num_outputs=1, image_size=224, dropout=0.0).eval()
    assert net.features.conv0.in_channels == 1 and net.class_layers.out.in_features == 1024
    assert round(_count(net) / 1e6, 1) == 6.9
    with torch.no_grad():  # one small forward pass: 120 convolutions are seconds on a busy CPU
        assert net(torch.randn(2, 1, 32, 32)).shape == (2, 1)
    three = monai_densenet121(in_chans=3, num_outputs=3, image_size=224, dropout=0.0)
    assert three.features.conv0.in_channels == 3 and three.class_layers.out.out_features == 3


def test_densenet121_dropout_is_inside_its_dense_layers() -> None:
    """MONAI puts `dropout_prob` after every dense layer as channel dropout, not before the classifier as for the ResNets."""
    plain = monai_densenet121(in_chans=1, num_outputs=1, image_size=224, dropout=0.0)
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in plain.modules())
    dropped = [
        m
        for m in monai_densenet121(in_chans=1, num_outputs=1, image_size=224, dropout=0.25).modules()
        if isinstance(m, nn.modules.dropout._DropoutNd)
    ]
    assert (
        len(dropped) == 58 and {type(m) for m in dropped} == {nn.Dropout2d} and {m.p for m in dropped} == {0.25}
    )  # 6+12+24+16 dense layers


def test_real_films_through_the_preprocessing_give_finite_logits_and_gradients(films: np.ndarray) -> None:
    torch.manual_seed(0)
    net = monai_resnet(18, 0.25)(in_chans=1, num_outputs=1, image_size=64, dropout=0.0)
    x = normalise(torch.from_numpy(films), 0.5, 0.25)
    out = net.train()(x)
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    nn.functional.binary_cross_entropy_with_logits(out, torch.tensor([[0.0], [0.0], [1.0], [1.0]])).backward()
    assert net.conv1.weight.grad is not None and torch.isfinite(net.conv1.weight.grad).all() and net.conv1.weight.grad.abs().sum() > 0
    with torch.no_grad():
        scores = net.eval()(x)[:, 0]
    assert len(set(scores.tolist())) == 4  # different films, different outputs
