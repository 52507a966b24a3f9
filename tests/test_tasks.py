"""The Task object: classes, outputs, probabilities, loss and P(pneumonia) for both tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pneumo.errors import PneumoError
from pneumo.tasks import BINARY, PATHOGEN, get_task, pneumonia_probability


def test_names_classes_and_outputs() -> None:
    assert get_task("binary") is BINARY and get_task(PATHOGEN) is PATHOGEN
    assert BINARY.classes == ("NORMAL", "PNEUMONIA") and BINARY.num_outputs == 1
    assert PATHOGEN.classes == ("normal", "bacteria", "virus") and PATHOGEN.num_outputs == 3
    with pytest.raises(PneumoError, match="unknown task 'viral'"):
        get_task("viral")


def test_targets_from_dataset_labels() -> None:
    assert BINARY.target("PNEUMONIA", "virus") == 1 and BINARY.target("NORMAL", None) == 0
    assert (
        PATHOGEN.target("NORMAL", None) == 0
        and PATHOGEN.target("PNEUMONIA", "bacteria") == 1
        and PATHOGEN.target("PNEUMONIA", "virus") == 2
    )
    with pytest.raises(PneumoError, match="unknown pathogen"):
        PATHOGEN.target("PNEUMONIA", None, "x.jpeg")


def test_probabilities_sum_to_one_and_agree_with_the_pneumonia_logit() -> None:
    logits = {BINARY: torch.tensor([[-2.0], [0.0], [3.0]]), PATHOGEN: torch.tensor([[2.0, 0.1, -1.0], [0.0, 0.0, 0.0], [-3.0, 1.0, 2.0]])}
    for task, z in logits.items():
        probs = task.probabilities(z)
        assert probs.shape == (3, len(task.classes))
        torch.testing.assert_close(probs.sum(1), torch.ones(3))
        p = pneumonia_probability(probs.numpy())
        np.testing.assert_allclose(p, torch.sigmoid(task.pneumonia_logit(z)).numpy(), rtol=1e-5)  # log-odds of the same number
    np.testing.assert_allclose(BINARY.probabilities(logits[BINARY])[:, 1].numpy(), torch.sigmoid(logits[BINARY][:, 0]).numpy())


def test_loss_is_class_weighted_cross_entropy() -> None:
    z, y = torch.tensor([[1.5], [-0.5], [0.2]]), torch.tensor([1, 0, 1])
    weights = torch.tensor([2.0, 0.5])
    plain = F.binary_cross_entropy_with_logits(z[:, 0], y.float(), reduction="none")
    torch.testing.assert_close(BINARY.loss(z, y, weights), (weights[y] * plain).mean())
    z3, y3 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(PATHOGEN.loss(z3, y3, torch.ones(3)), F.cross_entropy(z3, y3))
    smoothed = BINARY.loss(z, y, torch.ones(2), smoothing=0.2)
    targets = y.float() * 0.8 + 0.1
    torch.testing.assert_close(smoothed, F.binary_cross_entropy_with_logits(z[:, 0], targets))
