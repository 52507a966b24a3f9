from __future__ import annotations

import pytest
import torch
from torch import nn

from pneumo.errors import PneumoError
from pneumo.models import create_model, list_models, model_spec
from pneumo.models.registry import ModelSpec, cam_layer, classifier_layer, register_model
from pneumo.models.seed_cnn import SeedCNN


def keras_trainable_params(in_ch: int, size: int) -> int:
    """The notebook's trainable parameters, derived layer by layer from its description.

    BatchNorm is counted with its 2 trainable vectors (Keras also reports 2 non-trainable).
    """
    conv = lambda i, o: 9 * i * o + o  # noqa: E731  Conv2D 3x3 with bias
    sep = lambda i, o: 9 * i + i * o + o  # noqa: E731  depthwise (no bias) + pointwise with bias
    block = lambda i, o: sep(i, o) + sep(o, o) + 2 * o  # noqa: E731
    dense = lambda i, o: i * o + o + 2 * o  # noqa: E731  Dense + BatchNorm
    side = size // 2 // 2 // 2 // 2 // 2
    return (
        conv(in_ch, 16)
        + conv(16, 16)
        + block(16, 32)
        + block(32, 64)
        + block(64, 128)
        + block(128, 256)
        + dense(256 * side * side, 512)
        + dense(512, 128)
        + dense(128, 64)
        + 64
        + 1
    )


@pytest.mark.parametrize("size", [180, 128, 64])
def test_seed_cnn_matches_the_notebook_layer_for_layer(size: int) -> None:
    net = create_model("seed_cnn", num_outputs=1, image_size=size)
    assert sum(p.numel() for p in net.parameters()) == keras_trainable_params(1, size)
    bns = [m for m in net.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert len(bns) == 7 and all(m.momentum == pytest.approx(0.01) and m.eps == pytest.approx(1e-3) for m in bns)
    drops = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.2, 0.2, 0.7, 0.5, 0.3]
    depthwise = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 8 and all(m.bias is None for m in depthwise)


def test_seed_cnn_uses_glorot_uniform_and_zero_bias() -> None:
    torch.manual_seed(0)
    net = SeedCNN(image_size=180)
    first_dense = net.classifier[1][0]
    limit = (6 / (6400 + 512)) ** 0.5
    assert first_dense.weight.abs().max() <= limit
    assert first_dense.weight.abs().max() > 0.95 * limit  # uniform over the whole range, not a narrower init
    assert torch.count_nonzero(first_dense.bias) == 0


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("outputs", [1, 3])
def test_every_registered_model_takes_one_channel_and_gives_logits(name: str, outputs: int) -> None:
    net = create_model(name, num_outputs=outputs, image_size=64).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, outputs)
    assert torch.isfinite(out).all()
    spec = model_spec(name)
    assert spec.std > 0 and spec.image_size >= 64


def test_unknown_model_is_a_user_error() -> None:
    with pytest.raises(PneumoError, match="unknown model 'resnet999'.*resnet18"):
        create_model("resnet999")


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_every_spec_names_its_classifier_and_the_map_grad_cam_explains(name: str, dropout: float) -> None:
    net = create_model(name, num_outputs=2, image_size=64, dropout=dropout).eval()
    layer_name, head = classifier_layer(net)
    assert isinstance(head, nn.Linear) and head.out_features == 2 and net.get_submodule(layer_name) is head
    seen: dict[str, torch.Tensor] = {}
    handles = [
        head.register_forward_hook(lambda _m, inputs, out: seen.update(features=inputs[0], head=out)),
        cam_layer(net).register_forward_hook(lambda _m, _i, out: seen.update(cam=out)),
    ]
    with torch.no_grad():
        logits = net(torch.rand(2, 1, 64, 64))
    for handle in handles:
        handle.remove()
    assert torch.equal(seen["head"], logits)  # the named classifier is the network's last word
    assert seen["features"].shape == (2, head.in_features)  # its input: the penultimate features
    assert seen["cam"].dim() == 4 and seen["cam"].shape[-1] > 1  # a spatial map


def test_a_spec_that_names_no_layers_has_them_found() -> None:
    spec = ModelSpec(
        "tiny", lambda **kw: nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(8), nn.Linear(8, 1)), 64, 0.5, 0.25, "t"
    )
    register_model(spec)
    try:
        net = create_model("tiny", image_size=64)
        assert classifier_layer(net)[0] == "3" and cam_layer(net) is None  # the last Linear; Grad-CAM finds the map by a forward pass
    finally:
        from pneumo.models import registry

        registry._REGISTRY.pop("tiny")
