"""Subsets of a task's training split: the limited-data subsets and the validation split that fine-tuning and
evaluation carve before training (``ctinit finetune``, ``ctinit evaluate``, ``ctinit pick``)."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import ConfigError


def limit_train_samples(task, max_samples: int, seed: int):
    """A seeded subset of ``max_samples`` training examples, spread over the classes as evenly as possible."""
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ConfigError(f"--max-train-samples must be a positive integer, got {max_samples!r}")
    labels = task.y_train.detach().cpu().numpy()
    if max_samples >= len(labels):
        return task
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(task.num_classes)]
    order: list[int] = []
    for rank in range(max(len(p) for p in per_class)):
        for c in rng.permutation(len(per_class)):
            if rank < len(per_class[c]):
                order.append(int(per_class[c][rank]))
    keep = torch.from_numpy(np.sort(np.array(order[:max_samples], dtype=np.int64)))
    return dataclasses.replace(task, x_train=task.x_train.index_select(0, keep.to(task.x_train.device)),
                               y_train=task.y_train.index_select(0, keep.to(task.y_train.device)),
                               classes=list(task.classes))


def limit_task(task, seed: int, max_train_per_class: int | None = None, max_train_samples: int | None = None):
    if max_train_per_class:
        task = task.subset_train(int(max_train_per_class), seed=seed)
    if max_train_samples:
        task = limit_train_samples(task, int(max_train_samples), seed)
    return task


def check_validation(fraction: float, score: str) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"--val-fraction must be at least 0 and below 1, got {fraction!r}")
    if score not in ("test", "validation"):
        raise ConfigError(f"score must be 'test' or 'validation', got {score!r}")
    if score == "validation" and not fraction:
        raise ConfigError("scoring on the validation split needs a validation fraction above 0")


def prepare_task(task, seed: int, validation_fraction: float, score: str = "test", max_train_per_class=None,
                 max_train_samples=None):
    """``(task to fine-tune, validation part or None)``: the validation split carved from the full training split
    (seeded, per class), then the limited-data subset drawn from the rest. ``score="validation"``: the returned
    task's test split IS the validation split (its real test split is dropped, never read)."""
    validation = None
    if validation_fraction:
        task, validation = task.split_train(validation_fraction, seed)
    task = limit_task(task, seed, max_train_per_class, max_train_samples)
    if score == "validation":
        return dataclasses.replace(task, x_test=validation.x_train, y_test=validation.y_train), None
    return task, validation


__all__ = ["check_validation", "limit_task", "limit_train_samples", "prepare_task"]
