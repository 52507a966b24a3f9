"""The notebook's network: its layers, Keras's defaults, its output at several input sizes, and its size in parameters.

Nothing here needs the data: the network is checked against its own definition (the Keras model of the
notebook), so a layer added, dropped or resized shows up as a changed structure or parameter count.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pneumo.models.seed_cnn import SeedCNN, SeparableConv2d, conv_block, dense_block

pytestmark = pytest.mark.slow  # whole-network passes over many cases: the full suite runs them, the fast loop leaves them out

BLOCKS = [(16, 32), (32, 64), (64, 128), (128, 256)]  # (in, out) channels of the four separable blocks
DENSE = [(512, 0.7), (128, 0.5), (64, 0.3)]  # units and dropout of the three dense blocks


def _expected_parameters(in_chans: int, num_outputs: int, image_size: int) -> int:
    """The count written out from the notebook's layers, independently of the module's code."""
    total = in_chans * 16 * 9 + 16 + 16 * 16 * 9 + 16  # two 3x3 convolutions with biases

    def separable(c_in: int, c_out: int) -> int:
        return c_in * 9 + c_in * c_out + c_out  # depthwise 3x3 (no bias), pointwise 1x1 with bias

    for c_in, c_out in BLOCKS:
        total += separable(c_in, c_out) + separable(c_out, c_out) + 2 * c_out  # + BatchNorm's gamma and beta
    side = image_size // 32  # five floor-halvings
    features = 256 * side * side
    for units, _ in DENSE:
        total += features * units + units + 2 * units  # Dense + BatchNorm
        features = units
    return total + features * num_outputs + num_outputs


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("in_chans", "num_outputs", "image_size"), [(1, 1, 180), (1, 2, 64), (3, 1, 96), (1, 1, 32)])
def test_parameter_count_follows_the_definition(in_chans: int, num_outputs: int, image_size: int) -> None:
    net = SeedCNN(in_chans=in_chans, num_outputs=num_outputs, image_size=image_size)
    assert _count(net) == _expected_parameters(in_chans, num_outputs, image_size)


def test_the_default_network_is_the_notebooks_3_5_million_parameters() -> None:
    """180 px leaves a 5x5x256 feature map; the registry advertises 3.5M parameters."""
    net = SeedCNN()
    assert _count(net) == 3_494_145
    assert net.classifier[1][0].in_features == 256 * 5 * 5


@pytest.mark.parametrize(("image_size", "side"), [(32, 1), (63, 1), (100, 3), (180, 5)])
def test_output_is_one_logit_per_image_at_several_sizes(image_size: int, side: int) -> None:
    torch.manual_seed(0)
    net = SeedCNN(image_size=image_size).eval()
    x = torch.randn(3, 1, image_size, image_size)
    with torch.no_grad():
        features, out = net.features(x), net(x)
    assert features.shape == (3, 256, side, side)  # each pool floors, like Keras's 'valid' pooling
    assert out.shape == (3, 1) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_outputs_and_input_channels_are_configurable() -> None:
    net = SeedCNN(in_chans=3, num_outputs=4, image_size=64).eval()
    assert net.features[0].in_channels == 3 and net.classifier[-1].out_features == 4
    with torch.no_grad():
        assert net(torch.rand(2, 3, 64, 64)).shape == (2, 4)
    with pytest.raises(RuntimeError):  # a single-channel film to a 3-channel net is an error, not a silent broadcast
        net(torch.rand(2, 1, 64, 64))


def test_an_input_of_another_size_than_built_for_is_refused_not_resized() -> None:
    net = SeedCNN(image_size=64).eval()
    with torch.no_grad(), pytest.raises(RuntimeError):
        net(torch.rand(1, 1, 128, 128))


@pytest.mark.parametrize("image_size", [31, 16, 1])
def test_too_small_an_image_size_is_refused_with_the_minimum(image_size: int) -> None:
    with pytest.raises(ValueError, match=rf"image_size {image_size} is too small for seed_cnn \(needs at least 32\)"):
        SeedCNN(image_size=image_size)


def test_layer_structure_is_the_notebooks() -> None:
    net = SeedCNN()
    stem = list(net.features)[:5]
    assert [type(m) for m in stem] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    assert stem[0].kernel_size == (3, 3) and stem[0].padding == (1, 1) and stem[0].out_channels == 16
    blocks = [m for m in net.features if isinstance(m, nn.Sequential)]
    assert [(b[0].depthwise.in_channels, b[1].pointwise.out_channels) for b in blocks] == BLOCKS
    # dropout 0.2 after the 128 and the 256 block, as in the notebook
    kinds = [type(m).__name__ for m in list(net.features)[5:]]
    assert kinds == ["Sequential", "Sequential", "Sequential", "Dropout", "Sequential", "Dropout"]
    assert [m.p for m in net.features if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    dense = [m for m in net.classifier if isinstance(m, nn.Sequential)]
    assert [(d[0].out_features, d[3].p) for d in dense] == DENSE
    assert [type(m) for m in dense[0]] == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout]
    assert isinstance(net.classifier[0], nn.Flatten) and isinstance(net.classifier[-1], nn.Linear)  # logits: no sigmoid
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 5


def test_separable_convolution_is_depthwise_then_pointwise_with_relu_after() -> None:
    layer = SeparableConv2d(4, 6)
    assert layer.depthwise.groups == 4 and layer.depthwise.kernel_size == (3, 3) and layer.depthwise.bias is None
    assert layer.pointwise.kernel_size == (1, 1) and layer.pointwise.bias is not None
    torch.manual_seed(1)
    nn.init.normal_(layer.pointwise.bias)
    x = torch.randn(2, 4, 9, 9)
    expected = torch.relu(
        nn.functional.conv2d(
            nn.functional.conv2d(x, layer.depthwise.weight, padding=1, groups=4), layer.pointwise.weight, layer.pointwise.bias
        )
    )
    out = layer(x)
    assert out.shape == (2, 6, 9, 9) and torch.allclose(out, expected, atol=1e-6)
    assert (out == 0).any() and (out > 0).any()  # the ReLU is there, and not everything is clipped


def test_blocks_use_keras_batchnorm_defaults() -> None:
    """Keras's momentum 0.99 is PyTorch's 0.01; its epsilon is 1e-3, not PyTorch's 1e-5."""
    norms = [
        m
        for m in (*conv_block(8, 16), *dense_block(8, 16, 0.5), *SeedCNN(image_size=32).modules())
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))
    ]
    assert len(norms) == 2 + 4 + 3
    assert {(m.momentum, m.eps) for m in norms} == {(0.01, 1e-3)}


def test_weights_start_from_keras_defaults() -> None:
    """Glorot-uniform kernels and zero biases, as the Keras model was initialised."""
    torch.manual_seed(0)
    layers = [m for m in SeedCNN(image_size=64).modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 2 + 4 * 2 * 2 + 4
    for m in layers:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
        assert m.bias is None or not m.bias.any()


def test_the_same_seed_builds_the_same_network() -> None:
    torch.manual_seed(3)
    a = SeedCNN(image_size=64).state_dict()
    torch.manual_seed(3)
    b = SeedCNN(image_size=64).state_dict()
    torch.manual_seed(4)
    c = SeedCNN(image_size=64).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_training_mode_runs_and_backpropagates_to_the_first_layer() -> None:
    torch.manual_seed(0)
    net = SeedCNN(image_size=32).train()
    out = net(torch.rand(4, 1, 32, 32))
    nn.functional.binary_cross_entropy_with_logits(out, torch.tensor([[0.0], [1.0], [0.0], [1.0]])).backward()
    assert net.features[0].weight.grad is not None and net.features[0].weight.grad.abs().sum() > 0
