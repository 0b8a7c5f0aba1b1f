"""The in-memory task: uint8 NCHW images and int64 labels for both splits (:class:`TaskData`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import TaskSpecError, one_line
from .subsets import exactly_per_class, fraction_per_class, stratified_indices


@dataclass
class TaskData:
    """One classification task in memory: uint8 NCHW images and int64 labels for both splits."""

    name: str
    spec: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    num_classes: int
    classes: list[str]
    hflip: bool = True  # flip-safe (readers set it from the source; see tasks/raw.py RawTask.hflip)
    notes: list[str] = field(default_factory=list, repr=False)  # what reading did to the images, one line each

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:  # compact: never prints tensor contents
        return (
            f"TaskData(name={self.name!r}, spec={self.spec!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes}, hflip={self.hflip}, "
            f"device={self.x_train.device})"
        )

    def to(self, device: str | torch.device) -> "TaskData":
        """A copy with every tensor on ``device`` (tensors already there are shared, not copied)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            classes=list(self.classes),
            notes=list(self.notes),
        )

    def preprocessing(self, channels: int, hflip: bool, augment: bool = True) -> list[str]:
        """What is done to this task's images before a model with ``channels`` input channels sees them, one line
        each: reading's notes (resize, colour conversion), the channel repeat, and the random flip when on."""
        lines = [f"{self.name}: {note}" for note in self.notes]
        if self.image_shape[0] == 1 and channels == 3:
            lines.append(f"{self.name}: grayscale images repeated to 3 channels (the model takes RGB)")
        if augment and hflip:
            lines.append(f"{self.name}: training images are flipped horizontally at random (the task is marked "
                         "flip-safe, or --hflip was given; --no-hflip turns it off)")
        return lines

    def subset_train(self, per_class: int, seed: int) -> "TaskData":
        """A class-balanced, seeded subset of the train split with ``per_class`` examples per class.

        Every class present in the train split contributes exactly ``per_class`` examples (kept in
        their original order); the test split is unchanged. Same seed -> same subset. Raises
        :class:`TaskSpecError` when ``per_class < 1`` or a class has fewer than ``per_class``
        train examples.
        """
        labels = self.y_train.detach().cpu().numpy()
        present = np.unique(labels)
        rule = exactly_per_class(per_class, f"task {self.name!r} ({self.spec})",
                                 lambda i: self._class_name(int(present[i])))
        return self.take_train(stratified_indices(labels, rule, seed))

    def split_train(self, fraction: float, seed: int, what: str = "a validation split (--val-fraction)"
                    ) -> "tuple[TaskData, TaskData]":
        """``(train, held_out)``: per class, ``round(fraction * n)`` (at least 1, at most n - 1) seeded examples of
        the train split go to ``held_out`` (as its train split); the rest stay. The test split is untouched: a
        validation split carved this way never sees the test split. Same seed -> same split. A class with fewer
        than 2 training examples cannot be in both splits (a score on it would be on nothing, or miss the class):
        a one-line TaskSpecError naming the classes and ``what`` the split is for."""
        labels = self.y_train.detach().cpu().numpy()
        self._check_splittable(labels, what)
        held = stratified_indices(labels, fraction_per_class(fraction), seed)
        mask = np.zeros(labels.size, dtype=bool)
        mask[held] = True
        return self.take_train(np.flatnonzero(~mask)), self.take_train(held)

    def _check_splittable(self, labels: np.ndarray, what: str) -> None:
        present, counts = np.unique(labels, return_counts=True)
        short = [self._class_name(int(c)) for c, n in zip(present, counts) if n < 2]
        if short or not labels.size:
            named = ", ".join(repr(name) for name in short[:5]) + (f" (and {len(short) - 5} more)" if len(short) > 5 else "")
            raise TaskSpecError(one_line(
                f"task {self.name!r} ({self.spec}): cannot hold out {what}: "
                + (f"class{'es' if len(short) > 1 else ''} {named} ha{'ve' if len(short) > 1 else 's'} fewer than 2 "
                   "training examples" if short else "no training examples")
                + "; every class needs at least 2 (one to train on, one to score): add examples"))

    def take_train(self, keep: np.ndarray) -> "TaskData":
        """A copy whose train split is the examples at ``keep`` (in that order); the test split is shared."""
        index = torch.from_numpy(np.asarray(keep, dtype=np.int64)).to(self.x_train.device)
        return dataclasses.replace(self, x_train=self.x_train.index_select(0, index),
                                   y_train=self.y_train.index_select(0, index.to(self.y_train.device)),
                                   classes=list(self.classes))

    def _class_name(self, c: int) -> str:
        return self.classes[c] if 0 <= c < len(self.classes) else str(c)


__all__ = ["TaskData"]
