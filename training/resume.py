"""Where ``--resume`` continues: the newest complete checkpoint of this run, checked before any data is loaded,
and its state put back into the engine, the samplers and the RNGs once they are built."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ctinit.errors import CheckpointError, ConfigError

from . import checkpoint as ckpt
from .config import TrainConfig, changed_keys
from .rundir import RunDir

log = logging.getLogger("ctinit.meta_train")


@dataclass
class ResumePoint:
    """A checkpoint to continue from: its folder, step and ``meta.json``."""

    path: Path
    step: int
    meta: dict

    @property
    def best(self) -> dict:
        return self.meta.get("best_validation", {"accuracy": -1.0, "step": None})

    def rank_state(self, rank: int, tasks: dict, names: list[str]) -> dict:
        """Process ``rank``'s state; refused when the heads do not fit ``tasks`` (global index -> task)."""
        state = ckpt.read_state(self.path / f"rank-{rank}")
        check_head_sizes(state, tasks, names, self.path)
        return state


def find_resume_point(run: RunDir, config: TrainConfig, world: int) -> ResumePoint | None:
    """The newest complete checkpoint of this run (None: none, training starts at step 0), refused when it was
    written by another number of processes or with a config that would change the result."""
    path = run.latest(run.run_id)
    if path is None:
        log.info("--resume: no complete checkpoint in %s, starting from step 0", run.checkpoints)
        return None
    meta = ckpt.read_meta(path)
    if meta["world_size"] != world:
        raise CheckpointError(f"{path} was written by {meta['world_size']} processes; resume it with "
                              f"{meta['world_size']} processes (this launch has {world})")
    changed = changed_keys(meta["config"], config)
    if changed:
        raise ConfigError(f"cannot resume {path}: config keys {changed} differ from the checkpoint's "
                          "and would change the result; restore them or start a new run directory")
    step = int(meta["step"])
    if config.steps < step and config.algorithm != "scratch":
        raise ConfigError(f"steps = {config.steps} is below the step of the checkpoint to resume "
                          f"({path}, step {step}): pass steps >= {step}")
    return ResumePoint(path, step, meta)


def check_head_sizes(rank_state: dict, tasks: dict, names: list[str], path: Path) -> None:
    """Refuse a checkpoint whose heads do not fit the tasks' classes (a task's data changed since it was written)."""
    pool = rank_state.get("pool")
    slots = pool["slots"] if pool is not None else sorted(tasks)
    heads = {int(i): s["head"] for i, s in zip(slots, rank_state["engine"]["tasks"])}
    if pool is not None:
        heads.update({int(i): s["head"] for i, s in pool["stored"].items()})
    for i, head in sorted(heads.items()):
        saved = head["weight"].shape[0]
        if i in tasks and saved != tasks[i].num_classes:
            raise CheckpointError(f"cannot resume {path}: task {names[i]} has {tasks[i].num_classes} classes but its "
                                  f"head in the checkpoint has {saved}; restore the task's data or start a new run directory")


def restore(point: ResumePoint, state: dict, engine, samplers) -> None:
    """Put a checkpoint's state back: the engine, every sampler (training, then held-out), the RNGs."""
    try:
        engine.load_state_dict(state["engine"])
        for sampler, s in zip(samplers, state["samplers"]):
            sampler.load_state_dict(s)
        ckpt.set_rng_state(state["rng"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{point.path}: does not fit this run's model and tasks ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}); delete this step folder or start over with "
                              "--overwrite") from None
    log.info("resumed from %s (step %d)", point.path, point.step)
