"""An ensemble of networks as one network: the members' probabilities averaged.

Every member keeps its own normalisation and calibration temperature; the ensemble takes
images in [0, 1] (its checkpoint's mean 0, std 1) at the members' common size, and returns the
logits of the averaged probabilities, so the usual activation (`Task.probabilities`) gives the
average back, the ensemble's own temperature can recalibrate it, and it exports to one ONNX
graph. The members' penultimate features, side by side, pass through `feature_layer`, where
the input checks (`pneumo.inference.features`) read them.

Grad-CAM explains the last member's feature map (the last spatial map the forward pass makes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pneumo.errors import PneumoError
from pneumo.models.registry import classifier_layer, create_model
from pneumo.tasks import Task, get_task

__all__ = ["ENSEMBLE", "EnsembleMember", "Ensemble", "split_head", "build_ensemble"]

ENSEMBLE = "ensemble"  # the architecture name an ensemble checkpoint records
_EPS = 1e-7


@dataclass(frozen=True)
class EnsembleMember:
    """What the ensemble needs to know of a member network (recorded in its checkpoint's `members`)."""

    architecture: str
    num_outputs: int
    mean: float
    std: float
    temperature: float = 1.0
    dropout: float = 0.0
    crop: str = "none"
    source: str = ""  # where it came from (a run folder), for provenance
    weights_sha256: str = ""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EnsembleMember:
        try:
            return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})
        except TypeError as exc:
            raise PneumoError(f"an ensemble member's description is incomplete ({exc})") from None


def split_head(net: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The network without its classifier (as its spec names it, replaced by nn.Identity, so it
    returns the classifier's input: its penultimate features), and that classifier."""
    name, head = classifier_layer(net)
    parent_name, _, attr = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    if isinstance(parent, nn.Sequential):
        parent[int(attr)] = nn.Identity()
    else:
        setattr(parent, attr, nn.Identity())
    return net, head


class Ensemble(nn.Module):
    """Members' probabilities averaged, returned as logits of the average.

    Args:
        bodies: the members without their classifiers (`split_head`).
        heads: their classifiers.
        members: their normalisation and temperature.
        task: the task every member was trained for.
    """

    def __init__(self, bodies: list[nn.Module], heads: list[nn.Linear], members: list[EnsembleMember], task: Task) -> None:
        super().__init__()
        if not bodies or len({len(bodies), len(heads), len(members)}) != 1:
            raise PneumoError("an ensemble needs at least one member, each with its body, head and description")
        self.bodies, self.heads = nn.ModuleList(bodies), nn.ModuleList(heads)
        self.members, self.task = list(members), task
        self.feature_layer = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs, features = [], []
        for body, head, member in zip(self.bodies, self.heads, self.members):
            f = body((x - member.mean) / member.std)
            features.append(f.flatten(1))
            probs.append(self.task.probabilities(head(f).float(), member.temperature))
        self.feature_layer(torch.cat(features, dim=1))
        mean = torch.stack(probs).mean(dim=0).clamp(_EPS, 1 - _EPS)
        if self.task.num_outputs == 1:
            return (torch.log(mean[:, 1]) - torch.log(mean[:, 0])).unsqueeze(1)
        return torch.log(mean)


def build_ensemble(members: list[dict[str, Any]], task: str, image_size: int) -> Ensemble:
    """A freshly built ensemble of the described members (weights loaded afterwards)."""
    described = [EnsembleMember.from_dict(m) for m in members]
    parts = [
        split_head(create_model(m.architecture, num_outputs=m.num_outputs, image_size=image_size, dropout=m.dropout, crop=m.crop))
        for m in described
    ]
    return Ensemble([b for b, _ in parts], [h for _, h in parts], described, get_task(task))
