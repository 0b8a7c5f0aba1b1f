"""Build the trajectory engine for this process's tasks: the initial backbone, one batch sampler and head per task,
the task pool's slots (``active_tasks``), the meta learning-rate schedule."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ctinit.errors import ConfigError
from ctinit.meta import TrajectoryEngine
from ctinit.tasks import BatchSampler, DeviceBatchSampler

from .config import TrainConfig, initial_backbone
from .pool import TaskPool, pool_share
from .task_setup import LoadedTasks, make_head, task_seed

log = logging.getLogger("ctinit.meta_train")


def meta_lr_at(base_lr: float, schedule: str, step: int, steps: int) -> float:
    """The meta learning rate in force at global step ``step`` (1-based) of ``steps``: ``constant`` keeps
    ``base_lr``; ``cosine`` is ``base_lr * (1 + cos(pi (step - 1) / steps)) / 2``, ``base_lr`` at step 1 and
    decaying towards 0 after the last step. A meta-update at step s (every step for CTS, every K for Reptile)
    uses the rate of step s."""
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps))
    raise ConfigError(f"unknown meta_lr_schedule '{schedule}': use constant or cosine")


def set_meta_lr(engine, config: TrainConfig, step: int) -> None:
    """Before global step ``step``: the meta optimizer's rate for that step's meta-update (if it has one)."""
    if config.meta_lr_schedule != "constant":
        lr = meta_lr_at(config.meta_optimizer.lr, config.meta_lr_schedule, step, config.steps)
        for group in engine.meta_optimizer.param_groups:
            group["lr"] = lr


def autocast_factory(precision: str, device: torch.device):
    if precision in ("no", "auto"):  # auto: the engine measures and sets its own (ctinit/execution/precision.py)
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def make_pool(config: TrainConfig, mine: list[int], world: int) -> TaskPool | None:
    """A task pool (active_tasks): every process trains an equal share of the active tasks, drawn from its block."""
    if not config.active_tasks:
        return None
    return TaskPool(mine, pool_share(config.active_tasks, len(config.tasks), world), config.seed)


@dataclass
class Trainee:
    """The engine and what feeds it: ``samplers`` (training, then held-out: what a checkpoint saves), the pool,
    and the global task index of each engine slot."""

    engine: TrajectoryEngine
    samplers: list
    pool: TaskPool | None
    slots: list[int]
    make_head: object
    source: object
    release: object

    def rotate(self) -> None:
        """At a reset (theta == phi): the pool's next draw takes the slots."""
        self.pool.rotate(self.engine, self.make_head, self.source, self.release)
        self.slots = self.pool.slots


def build_engine(config: TrainConfig, tasks: LoadedTasks, pool: TaskPool | None, rank_state: dict | None, comm,
                 device: torch.device) -> Trainee:
    """The engine over this process's tasks (the pool's first draw, or the checkpoint's pool state)."""
    torch.manual_seed(config.seed)
    backbone = initial_backbone(config).to(device)  # fresh weights, or init_from's (architecture checked)
    seed, mine = config.seed, tasks.indices
    # compile graphs/inductor: batches drawn on the device (counter-based augmentation, other draws than BatchSampler's)
    sampler_class = DeviceBatchSampler if config.compile in ("graphs", "inductor") else BatchSampler
    samplers = [sampler_class(t.x_train, t.y_train, config.batch_size, seed=task_seed(seed, i),
                              augment=config.augment, hflip=t.hflip, channels=backbone.config.num_channels)
                for i, t in zip(mine, tasks.train)]
    by_index = {i: (t, s) for i, t, s in zip(mine, tasks.train, samplers)}

    def task_head(i: int):
        return make_head(backbone.feature_dim, by_index[i][0].num_classes, task_seed(seed, i)).to(device)

    def task_source(i: int) -> BatchSampler:  # a pool task's data comes to the device for its turn
        task, sampler = by_index[i]
        sampler.x, sampler.y = task.x_train.to(device), task.y_train.to(device)
        return sampler

    def release(i: int) -> None:
        task, sampler = by_index[i]
        sampler.x, sampler.y = task.x_train, task.y_train

    if pool is not None:
        if rank_state is not None:
            pool.load_state_dict(rank_state["pool"])
        else:
            pool.draw()
    slots = mine if pool is None else pool.slots  # the global task index of each engine slot
    # Unaugmented, with their own seeds (the training samplers' draws are the same with or without them).
    heldout_samplers = [BatchSampler(t.x_train, t.y_train, config.batch_size, seed=task_seed(seed, i) + 1,
                                     augment=False, hflip=t.hflip, channels=backbone.config.num_channels)
                        for i, t in zip(mine, tasks.heldout)]
    world = comm.world_size
    engine = TrajectoryEngine(
        backbone, [task_head(i) for i in slots], [task_source(i) for i in slots], rule=config.algorithm,
        reset_period=config.reset_period,
        meta_interval=config.meta_interval, shift=config.shift, reset=config.reset,
        reset_heads=config.reset_heads, inner_optimizer=config.inner_optimizer,
        meta_optimizer=config.meta_optimizer, meta_exclude=config.meta_exclude,
        all_reduce=comm.sum_ if world > 1 else None, num_tasks_total=config.active_tasks or len(config.tasks),
        autocast=autocast_factory(config.mixed_precision, device),
        grad_scaling=config.mixed_precision == "fp16", execution=config.execution,
        compile=config.compile, channels_last=config.channels_last,
        heldout_batches=heldout_samplers or None, planned_steps=config.steps,
        precision=config.mixed_precision,
    )
    return Trainee(engine, samplers + heldout_samplers, pool, list(slots), task_head, task_source, release)
