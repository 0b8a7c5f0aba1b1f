"""Every process loads its own tasks: training (and FOMAML's held-out) splits of its block, and on the main process
the meta-validation tasks. A task's seed, head and data order depend only on the seed and its global index."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ctinit.errors import ConfigError, CtinitError
from ctinit.meta import RULES
from ctinit.models import TaskHead
from ctinit.tasks import load_task

from .config import TrainConfig


def task_seed(seed: int, index: int) -> int:
    return seed * 1000 + index


def heldout_split(task, fraction: float, seed: int):
    """``(train, heldout)``: per class, ``round(fraction * n)`` (at least 1, at most n - 1) seeded examples of
    the task's train split go to ``heldout`` (as its train split); the rest stay. The test split is untouched."""
    return task.split_train(fraction, seed, "FOMAML's held-out split (heldout_fraction; heldout_fraction=0 uses fresh "
                                            "training batches instead)")  # one routine, shared with validation splits (ctinit pick)


def make_head(feature_dim: int, num_classes: int, seed: int) -> TaskHead:
    """A head whose initial weights depend only on (seed, global task index), not on the process layout."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TaskHead(feature_dim, num_classes)


@dataclass
class LoadedTasks:
    """This process's tasks (its block, in order), their held-out splits (FOMAML) and the validation tasks."""

    indices: list[int]
    train: list = field(default_factory=list)
    heldout: list = field(default_factory=list)
    validation: list = field(default_factory=list)

    def by_index(self) -> dict:
        return dict(zip(self.indices, self.train))


def load_tasks(config: TrainConfig, mine: list[int], device, is_main: bool, comm, pooled: bool) -> LoadedTasks:
    """Load this process's tasks; one failure stops every process before training starts. ``pooled``: the tasks'
    data stays on the CPU and goes to the device for each turn in a slot."""
    loaded, error = LoadedTasks(list(mine)), None
    use_heldout = config.heldout_fraction > 0 and RULES[config.algorithm].direction == "heldout_gradient"
    try:
        for i in mine:
            task = load_task(config.tasks[i], image_size=config.image_size, seed=config.seed)
            if config.max_train_per_class:
                task = task.subset_train(int(config.max_train_per_class), seed=config.seed)
            if use_heldout:  # FOMAML's held-out gradient from a validation split, as in the official code
                task, heldout = heldout_split(task, config.heldout_fraction, task_seed(config.seed, i))
                loaded.heldout.append(heldout.to(device))
            loaded.train.append(task if pooled else task.to(device))
        validation = config.validation
        loaded.validation = [load_task(spec, image_size=config.image_size, seed=validation.seed)
                             for spec in validation.tasks] if (is_main and validation.every) else []
    except CtinitError as e:
        error = e
    if comm.any(error is not None, device):
        raise error or ConfigError("another process could not load its tasks; see its error line")
    return loaded
