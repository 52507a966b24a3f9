"""What a model is asked: its classes, outputs, loss and how P(pneumonia) is read off it.

Two tasks: `binary` (NORMAL / PNEUMONIA, one logit) and `pathogen` (normal / bacteria / virus,
three logits and a softmax). Every place where the two differ asks the `Task` instead of
comparing strings. P(pneumonia) is 1 - P(normal) for both, so every backend, report and page
reads the same number.

torch is imported inside the methods that need it: the ONNX runtime uses `Task` without it.

Example:
    >>> task = get_task("pathogen")
    >>> task.classes, task.num_outputs
    (('normal', 'bacteria', 'virus'), 3)
    >>> pneumonia_probability(np.array([[0.9, 0.05, 0.05]]))
    array([0.1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pneumo.errors import PneumoError

if TYPE_CHECKING:
    import torch

__all__ = ["CLASSES", "PATHOGEN_CLASSES", "Task", "BINARY", "PATHOGEN", "TASKS", "get_task", "pneumonia_probability"]

CLASSES = ("NORMAL", "PNEUMONIA")  # the labels of a dataset, and of every verdict
PATHOGEN_CLASSES = ("normal", "bacteria", "virus")


def pneumonia_probability(class_probabilities: np.ndarray) -> np.ndarray:
    """P(pneumonia) = 1 - P(normal) from class probabilities [N, n_classes] (normal first), for either task."""
    return 1.0 - np.asarray(class_probabilities)[:, 0]


@dataclass(frozen=True)
class Task:
    """A classification task: output classes in logit order, and what follows from them."""

    name: str
    classes: tuple[str, ...]

    @property
    def num_outputs(self) -> int:
        """Logits the network ends with: one for a binary task (sigmoid), one per class otherwise (softmax)."""
        return 1 if len(self.classes) == 2 else len(self.classes)

    def target(self, label: str, pathogen: str | None, where: object = "an image") -> int:
        """The class index of an image with a dataset label (NORMAL/PNEUMONIA) and pathogen."""
        if self is BINARY:
            return CLASSES.index(label)
        if label == "NORMAL":
            return 0
        if pathogen is None:
            raise PneumoError(f"{where}: pneumonia image with unknown pathogen cannot be used for the pathogen task")
        return PATHOGEN_CLASSES.index(pathogen)

    def probabilities(self, logits: torch.Tensor, temperature: float = 1.0, logit_offset: float = 0.0) -> torch.Tensor:
        """Logits [B, num_outputs] -> class probabilities [B, len(classes)], the logits divided by
        the model's calibration `temperature` first and `logit_offset` added to the log-odds of
        pneumonia (every pneumonia class's logit against normal's; `pneumo.evaluation.calibration`)."""
        import torch

        if temperature != 1.0:
            logits = logits / temperature
        if self.num_outputs == 1:
            p = torch.sigmoid(logits[:, 0] + logit_offset) if logit_offset else torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p, p], dim=1)
        if logit_offset:
            logits = torch.cat([logits[:, :1], logits[:, 1:] + logit_offset], dim=1)
        return torch.softmax(logits, dim=1)

    def pneumonia_logit(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-odds of P(pneumonia): the binary logit itself, or logsumexp(pneumonia classes) - normal,
        which does not saturate as a probability does (what Grad-CAM explains)."""
        import torch

        if self.num_outputs == 1:
            return logits[:, 0]
        return torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]

    def distillation_loss(
        self, logits: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """Weighted cross-entropy to a teacher's class probabilities [B, len(classes)], both softened by
        `temperature` and the result scaled by its square (Hinton et al. 2015), averaged over the batch."""
        import torch
        import torch.nn.functional as F

        log_teacher = torch.log(teacher.float().clamp_min(1e-7))
        if self.num_outputs == 1:
            soft = torch.sigmoid((log_teacher[:, 1] - log_teacher[:, 0]) / temperature)
            per_image = F.binary_cross_entropy_with_logits(logits[:, 0] / temperature, soft, reduction="none")
        else:
            soft = torch.softmax(log_teacher / temperature, dim=1)
            per_image = -(soft * torch.log_softmax(logits / temperature, dim=1)).sum(dim=1)
        return (weights * per_image).mean() * temperature**2

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        """Class-weighted cross-entropy averaged over the batch, as Keras does with class_weight."""
        import torch.nn.functional as F

        if self.num_outputs == 1:
            soft = targets.float() * (1 - smoothing) + 0.5 * smoothing
            per_image = F.binary_cross_entropy_with_logits(logits[:, 0], soft, reduction="none")
        else:
            per_image = F.cross_entropy(logits, targets, reduction="none", label_smoothing=smoothing)
        return (class_weights[targets] * per_image).mean()


BINARY = Task("binary", CLASSES)
PATHOGEN = Task("pathogen", PATHOGEN_CLASSES)
TASKS = {task.name: task for task in (BINARY, PATHOGEN)}


def get_task(name: str | Task) -> Task:
    """The task of a name (`binary`, `pathogen`), or a PneumoError listing them."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise PneumoError(f"unknown task {name!r}; pneumo knows {', '.join(TASKS)}")
    return TASKS[name]
