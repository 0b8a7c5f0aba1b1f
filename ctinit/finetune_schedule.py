"""How long fine-tuning runs and how its learning rate moves: the length (steps, or epochs over the training split),
the learning-rate schedule (today's step decay at fractions of the steps, or warm-up then cosine), and early stopping
on the validation split (patience, counted in evaluations, with the best weights kept).

Pure functions and one small tracker, so that :func:`ctinit.finetune.finetune` stays one loop and each rule has a test
(tests/test_finetune_schedule.py).
"""
from __future__ import annotations

import copy
import math

#: ``--steps auto``: at most this many passes over the training split ...
AUTO_EPOCHS = 100
#: ... stopped after this many evaluations (one per epoch) without a better validation accuracy.
AUTO_PATIENCE = 10


def planned_steps(steps: int, epochs: float | None, n_train: int, batch_size: int) -> int:
    """The length of a run: ``steps``, or, when ``epochs`` is set, that many passes over ``n_train`` examples in
    batches of ``batch_size`` (rounded up; at least one step)."""
    if epochs is None:
        return int(steps)
    return max(1, math.ceil(epochs * max(n_train, 1) / batch_size))


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, math.ceil(max(n_train, 1) / batch_size))


def eval_interval(eval_every: int, early_stop: int, steps: int, n_train: int, batch_size: int) -> int:
    """Steps between evaluations on the validation split: ``eval_every`` when set; with early stopping and no
    ``eval_every``, once per epoch but at least 10 times per run; otherwise 0 (at the end only)."""
    if eval_every:
        return eval_every
    if early_stop:
        return max(1, min(steps_per_epoch(n_train, batch_size), steps // 10))
    return 0


def lr_factor(step: int, steps: int, schedule: str, warmup: float, milestones, gamma: float) -> float:
    """The learning rate of step ``step + 1`` (``step`` steps done) relative to the base rate.

    ``warmup``: the first ``warmup`` fraction of the steps rise linearly to the base rate (both schedules). ``step``:
    multiplied by ``gamma`` at each milestone (fractions of the steps, as ``MultiStepLR``); ``cosine``: from the base
    rate after warm-up down to 0 at the last step.
    """
    warm = int(math.floor(warmup * steps))
    if step < warm:
        return (step + 1) / (warm + 1)
    if schedule == "cosine":
        span = max(1, steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))
    passed = sum(step >= m for m in milestone_steps(milestones, steps))
    return gamma ** passed


def milestone_steps(milestones, steps: int) -> list[int]:
    """The steps at which the step schedule decays (fractions of ``steps``; the same as before the option)."""
    return sorted({max(1, int(math.floor(m * steps))) for m in milestones})


def build_scheduler(optimizer, steps: int, schedule: str, warmup: float, milestones, gamma: float):
    """A torch scheduler stepped once per step. The step schedule without warm-up is ``MultiStepLR`` exactly as before
    these options existed (its learning rates, and so recorded results, are reproduced bit for bit)."""
    import torch

    if schedule == "step" and warmup == 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestone_steps(milestones, steps),
                                                    gamma=gamma)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda done: lr_factor(done, steps, schedule, warmup, milestones, gamma))


class EarlyStopping:
    """Keeps the best evaluation (higher validation accuracy; at equal accuracy, lower validation loss) and the
    weights it was made with; ``should_stop`` once ``patience`` evaluations in a row brought nothing better
    (``patience`` 0: never stops, the best is still tracked)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_step = 0
        self.best_accuracy = -math.inf
        self.best_loss = math.inf
        self.best_state = None
        self.since_best = 0

    def update(self, step: int, accuracy: float, loss: float, module=None) -> bool:
        """Record an evaluation; True when it is the best so far (its weights are copied from ``module``)."""
        better = accuracy > self.best_accuracy or (accuracy == self.best_accuracy and loss < self.best_loss)
        if better:
            self.best_step, self.best_accuracy, self.best_loss, self.since_best = step, accuracy, loss, 0
            if module is not None:
                self.best_state = copy.deepcopy(module.state_dict())
        else:
            self.since_best += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def restore(self, module) -> None:
        """Put the best weights back into ``module`` (a no-op before any evaluation)."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


__all__ = ["AUTO_EPOCHS", "AUTO_PATIENCE", "EarlyStopping", "build_scheduler", "eval_interval",
           "lr_factor", "milestone_steps", "planned_steps", "steps_per_epoch"]
