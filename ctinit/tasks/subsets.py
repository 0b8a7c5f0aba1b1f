"""Seeded, stratified subsets of a task's training split: ONE routine (:func:`stratified_indices`) with the rules
that size each class's share, used by everyone who carves examples out of a task -- the hold-out test split of
sources without one (:func:`holdout_indices`), the validation split (``TaskData.split_train``, ``ctinit
finetune/evaluate/pick``, the trainer's ``heldout_fraction``), and the limited-data subsets (``TaskData.subset_train``,
``--max-train-per-class``, ``--max-train-samples``).

Every class is shuffled by one seeded generator (classes in label order) and keeps its first ``k`` examples, so the
same seed gives the same subset, and a subset of more examples per class holds the smaller one.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..errors import ConfigError, TaskSpecError, one_line

#: Names the draw below; an evaluation's run key holds it, so that runs on subsets drawn before (``rng.choice`` per
#: class, a round-robin for ``--max-train-samples``) are run again rather than mixed with these.
SUBSET_DRAW = "per-class-shuffle"
#: ``rule(class sizes, generator) -> how many examples each class gives``.
SizeRule = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def stratified_indices(labels: np.ndarray, rule: SizeRule, seed: int) -> np.ndarray:
    """The sorted indices of a seeded per-class draw from ``labels``: each class present (in label order) is shuffled
    and gives its first ``rule(sizes)[c]`` examples."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    take = rule(np.array([len(s) for s in shuffled], dtype=np.int64), rng)
    chosen = [s[:int(k)] for s, k in zip(shuffled, take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def fraction_per_class(fraction: float) -> SizeRule:
    """``round(fraction * n)`` of each class of ``n >= 2`` examples, at least 1 and at most ``n - 1``; none of a
    class of one (it stays whole on the other side)."""
    return lambda sizes, _rng: np.array([min(n - 1, max(1, round(fraction * n))) if n > 1 else 0 for n in sizes])


def exactly_per_class(per_class: int, what: str = "task", class_name: Callable[[int], str] = str) -> SizeRule:
    """``per_class`` examples of every class; a class with fewer is a one-line TaskSpecError naming it (by
    ``class_name(index among the classes present)``) and the largest ``per_class`` that works."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise TaskSpecError(one_line(f"{what}: per_class must be a positive integer, got {per_class!r}"))

    def rule(sizes, _rng):
        short = [(c, int(n)) for c, n in enumerate(sizes) if n < per_class]
        if short:
            listed = ", ".join(f"{class_name(c)!r} has {n}" for c, n in short[:5])
            more = f" (and {len(short) - 5} more)" if len(short) > 5 else ""
            raise TaskSpecError(one_line(f"{what}: cannot take {per_class} train examples per class: {listed}{more}; "
                                         f"use per_class <= {int(sizes.min())}"))
        return np.full(len(sizes), per_class)
    return rule


def balanced_total(total: int) -> SizeRule:
    """``total`` examples spread over the classes as evenly as possible: every class gives the same number, a class
    too small gives all it has, and the examples left over go one each to classes drawn at random."""
    def rule(sizes, rng):
        if total >= sizes.sum():
            return sizes
        level = 0
        while np.minimum(sizes, level + 1).sum() <= total:
            level += 1
        take = np.minimum(sizes, level)
        larger = np.flatnonzero(sizes > level)
        take[rng.permutation(larger)[:total - int(take.sum())]] += 1
        return take
    return rule


def holdout_indices(labels: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices of a deterministic hold-out: :func:`fraction_per_class` of every class with two
    examples or more; when every class has a single example, that fraction of all examples instead."""
    labels = np.asarray(labels)
    test = stratified_indices(labels, fraction_per_class(holdout), seed)
    if not test.size:  # every class has one example: plain hold-out over all of them
        test = stratified_indices(np.zeros(labels.size, dtype=np.int64), fraction_per_class(holdout), seed)
    mask = np.ones(labels.size, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


# ------------------------------------------------------------------------------------------------ preparing a task


def limit_train_samples(task, max_samples: int, seed: int):
    """A seeded subset of ``max_samples`` training examples, spread over the classes as evenly as possible."""
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ConfigError(f"--max-train-samples must be a positive integer, got {max_samples!r}")
    labels = task.y_train.detach().cpu().numpy()
    if max_samples >= len(labels):
        return task
    return task.take_train(stratified_indices(labels, balanced_total(max_samples), seed))


def limit_task(task, seed: int, max_train_per_class: int | None = None, max_train_samples: int | None = None):
    """The limited-data subset: ``max_train_per_class`` examples of every class, then at most ``max_train_samples``
    in all (either may be None: no limit)."""
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


__all__ = [
    "SUBSET_DRAW", "balanced_total", "check_validation", "exactly_per_class", "fraction_per_class", "holdout_indices",
    "limit_task", "limit_train_samples", "prepare_task", "stratified_indices",
]
