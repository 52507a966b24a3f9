"""Models by name: `create_model("resnet18", num_outputs=1, image_size=224)`.

Every entry is a `ModelSpec`: how to build the network and its defaults (input size,
normalisation), which training records in the checkpoint and inference reads back. A new
architecture is one `register_model(ModelSpec(...))` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from pneumo.errors import PneumoError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSpec", "register_model", "create_model", "list_models", "model_spec", "classifier_layer", "cam_layer"]


@dataclass(frozen=True)
class ModelSpec:
    """What a model is and expects: a builder, the default input side, the intensity normalisation,
    and which of its layers the rest of pneumo reads (as timm's model configs name them).

    `build(in_chans=, num_outputs=, image_size=, dropout=)` returns a freshly initialised network.
    `classifier` is the dotted name of its output layer, an nn.Linear (or a Sequential ending in
    one, as dropout wraps it), whose input is the penultimate features the input check measures and
    an ensemble joins; `cam_layer` the module whose output map Grad-CAM explains (the last spatial
    one). Left empty, they are found: the last nn.Linear, and the last module with a spatial output.
    """

    name: str
    build: Callable[..., nn.Module]
    image_size: int
    mean: float
    std: float
    description: str
    classifier: str = ""
    cam_layer: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Add an architecture under `spec.name`; a name already taken needs `replace=True`.

    Example:
        >>> register_model(ModelSpec("tiny", lambda **kw: TinyNet(**kw), 128, 0.5, 0.25, "a test net"))
    """
    if spec.name in _REGISTRY and not replace:
        raise PneumoError(f"a model named {spec.name!r} is already registered; pass replace=True to replace it")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered model, or a PneumoError listing the names."""
    if name not in _REGISTRY:
        raise PneumoError(f"unknown model '{name}'; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(
    name: str, num_outputs: int = 1, image_size: int | None = None, in_chans: int = 1, dropout: float = 0.0, crop: str = "none"
) -> nn.Module:
    """Build a freshly initialised model from the registry; `crop="content"` crops its input first (`pneumo.models.framing`).

    Example:
        >>> net = create_model("seed_cnn", num_outputs=1, image_size=180)
    """
    from pneumo.models.framing import CROPS, with_content_crop

    spec = model_spec(name)
    if crop not in CROPS:
        raise PneumoError(f"unknown crop {crop!r}; available: {', '.join(CROPS)}")
    net = spec.build(in_chans=in_chans, num_outputs=num_outputs, image_size=image_size or spec.image_size, dropout=dropout)
    net.pneumo_spec = spec  # a plain attribute: the state dict is unchanged; `classifier_layer` and `cam_layer` read it
    return with_content_crop(net, spec.mean, spec.std) if crop == "content" else net


def classifier_layer(net: nn.Module) -> tuple[str, nn.Linear]:
    """The network's classifier and its dotted name: its spec's `classifier`, else its last nn.Linear."""
    from torch import nn  # here: the registry is read where PyTorch is not installed

    spec = getattr(net, "pneumo_spec", None)
    if isinstance(spec, ModelSpec) and spec.classifier:
        name, layer = spec.classifier, net.get_submodule(spec.classifier)
        if isinstance(layer, nn.Sequential):  # dropout before the Linear
            index, layer = next((str(i), m) for i, m in reversed(list(enumerate(layer))) if isinstance(m, nn.Linear))
            name = f"{name}.{index}"
        if not isinstance(layer, nn.Linear):
            raise PneumoError(f"{spec.name}'s classifier {spec.classifier!r} is a {type(layer).__name__}, not an nn.Linear")
        return name, layer
    named = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not named:
        raise PneumoError(f"{type(net).__name__} has no nn.Linear classifier layer")
    return named[-1]


def cam_layer(net: nn.Module) -> nn.Module | None:
    """The module Grad-CAM explains, as its spec names it; None when the spec does not (then it is found by a forward pass)."""
    spec = getattr(net, "pneumo_spec", None)
    return net.get_submodule(spec.cam_layer) if isinstance(spec, ModelSpec) and spec.cam_layer else None


def _seed_cnn(in_chans: int, num_outputs: int, image_size: int, dropout: float) -> nn.Module:
    from pneumo.models.seed_cnn import SeedCNN

    return SeedCNN(in_chans=in_chans, num_outputs=num_outputs, image_size=image_size)


def _register_builtins() -> None:
    from pneumo.models.monai_nets import monai_densenet121, monai_resnet

    for spec in (
        ModelSpec(
            "seed_cnn",
            _seed_cnn,
            180,
            0.0,
            1.0,
            "the notebook's separable-convolution CNN (3.5M parameters at 180 px)",
            "classifier.4",
            "features",
        ),
        ModelSpec("resnet18", monai_resnet(18), 224, 0.5, 0.25, "ResNet-18 (MONAI), single-channel input", "fc", "layer4"),
        ModelSpec(
            "resnet18_half",
            monai_resnet(18, 0.5),
            224,
            0.5,
            0.25,
            "ResNet-18 at half width (MONAI): 2.8M parameters, ~4x cheaper",
            "fc",
            "layer4",
        ),
        ModelSpec(
            "resnet18_quarter",
            monai_resnet(18, 0.25),
            224,
            0.5,
            0.25,
            "ResNet-18 at a quarter of its width (MONAI): 0.7M parameters",
            "fc",
            "layer4",
        ),
        ModelSpec(
            "resnet10_half",
            monai_resnet(10, 0.5),
            224,
            0.5,
            0.25,
            "ResNet-10 (one block a stage) at half width (MONAI): 1.2M parameters",
            "fc",
            "layer4",
        ),
        ModelSpec("resnet34", monai_resnet(34), 224, 0.5, 0.25, "ResNet-34 (MONAI), single-channel input", "fc", "layer4"),
        # class_layers: relu (the last spatial map), pool, flatten, dropout, out
        ModelSpec(
            "densenet121",
            monai_densenet121,
            224,
            0.5,
            0.25,
            "DenseNet-121 (MONAI), single-channel input",
            "class_layers.out",
            "class_layers.relu",
        ),
    ):
        register_model(spec)


_register_builtins()
