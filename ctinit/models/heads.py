"""Task heads and the two facts about a backbone that fine-tuning needs (feature size, input size).

A leaf module (torch only): :mod:`ctinit.finetune` imports it, and :mod:`ctinit.models.image_classifier` imports both, so
there is no import circle between fine-tuning and the classifier.
"""
from __future__ import annotations

from torch import nn


class TaskHead(nn.Linear):
    """A task-specific linear classifier on the backbone's pooled features; never part of phi."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__(in_features, num_classes)

    @property
    def num_classes(self) -> int:
        return self.out_features


def feature_dim(backbone: nn.Module) -> int:
    """Size of the pooled features a backbone returns."""
    dim = getattr(backbone, "feature_dim", None)
    return int(dim if dim is not None else backbone.config.feature_dim)


def image_size_of(backbone: nn.Module, default: int = 28) -> int:
    """The input size a backbone was made for (its config's ``image_size``)."""
    size = getattr(getattr(backbone, "config", None), "image_size", default)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size or default)


__all__ = ["TaskHead", "feature_dim", "image_size_of"]
