"""What a task's loss function returns, and what one global step of the engine reports."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[nn.Module, nn.Module, object], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def classification_loss(backbone: nn.Module, head: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``head(backbone(x))`` against ``y``, and the batch accuracy (detached, for logs)."""
    x, y = batch
    logits = head(backbone(x))
    return F.cross_entropy(logits, y), (logits.detach().argmax(1) == y).float().mean()


def split_loss(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A loss function returns a scalar loss, or ``(loss, accuracy)``."""
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


@dataclass
class StepResult:
    """What one global step did. Tensors stay on the device: building a StepResult never waits for the device.

    ``nonfinite`` is the device-side bool mask of the local tasks whose step was skipped (non-finite loss or
    gradient); ``skipped`` reads it back as a list (None when no task was skipped), which waits for the step to
    finish: read it at logging points, not every step, where throughput matters.
    """

    step: int
    losses: torch.Tensor
    meta_step: bool
    reset: bool
    delta: torch.Tensor | None = None  # phi' - phi of this step's meta-update
    accuracies: torch.Tensor | None = None  # per local task, when the loss function reports them
    nonfinite: torch.Tensor | None = None  # bool [T]: local tasks whose step was skipped

    @property
    def skipped(self) -> list[int] | None:
        """The local tasks whose step was skipped, or None (a host read of ``nonfinite``)."""
        if self.nonfinite is None:
            return None
        skipped = [t for t, bad in enumerate(self.nonfinite.tolist()) if bad]
        return skipped or None
