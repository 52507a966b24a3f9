"""The ensemble network: the members' probabilities averaged, their features side by side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumo.errors import PneumoError
from pneumo.models.ensemble import Ensemble, EnsembleMember, build_ensemble, split_head
from pneumo.models.registry import create_model
from pneumo.tasks import BINARY, PATHOGEN


@pytest.mark.parametrize("task", [BINARY, PATHOGEN])
def test_the_ensemble_averages_its_members_probabilities(task) -> None:
    torch.manual_seed(0)
    specs = [EnsembleMember("seed_cnn", task.num_outputs, 0.0, 1.0, 1.0), EnsembleMember("resnet18_half", task.num_outputs, 0.5, 0.25, 1.7)]
    nets = [create_model(m.architecture, num_outputs=task.num_outputs, image_size=64).eval() for m in specs]
    x = torch.rand(5, 1, 64, 64)
    expected = torch.stack([task.probabilities(net((x - m.mean) / m.std), m.temperature) for net, m in zip(nets, specs)]).mean(0)
    parts = [split_head(net) for net in nets]
    ensemble = Ensemble([b for b, _ in parts], [h for _, h in parts], specs, task).eval()
    with torch.no_grad():
        got = task.probabilities(ensemble(x))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_split_head_leaves_the_penultimate_features() -> None:
    net = create_model("resnet18_half", image_size=64, dropout=0.2).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        logits = net(x)
        body, head = split_head(net)
        features = body(x)
    assert features.shape == (2, head.in_features)
    torch.testing.assert_close(head(features), logits)


def test_a_built_ensemble_takes_the_members_weights_by_name() -> None:
    members = [{"architecture": "seed_cnn", "num_outputs": 1, "mean": 0.0, "std": 1.0}] * 2
    a, b = build_ensemble(members, "binary", 64), build_ensemble(members, "binary", 64)
    b.load_state_dict(a.state_dict(), strict=True)
    assert set(a.state_dict()) == set(b.state_dict()) and any(k.startswith("heads.1.") for k in a.state_dict())
    with pytest.raises(PneumoError, match="incomplete"):
        build_ensemble([{"architecture": "seed_cnn"}], "binary", 64)
    assert np.isfinite(sum(float(v.float().sum()) for v in a.state_dict().values()))
