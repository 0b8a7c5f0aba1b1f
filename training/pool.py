"""Task pools: the config's ``tasks`` may list more tasks than train at once (``active_tasks: T``).

The engine has T slots (T / world on each process). Every ``reset_period`` steps, right after a reset (every
theta == phi), the next tasks of a seeded draw take the slots: each process draws from its own contiguous block
of the pool (the blocks of ``shard_tasks``), without replacement until its block is used up, then from a new
permutation of the block. A task that stays active keeps its slot; a task that leaves stores its head, BN
statistics, parameters kept per task (``meta_exclude``), inner optimizer and loss-scaler state and skip counters
on the CPU until its next turn, when it continues from them. A task's first turn starts with a fresh head seeded by
its pool index (``seed * 1000 + index``, like its data order and augmentation), fresh optimizer state and the
initialization's BN statistics, so nothing depends on the slot a task lands in.

The scheduling lives here, in the trainer; the engine only offers ``task_state(slot)`` and ``set_task(slot, ...)``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ctinit.errors import ConfigError


def pool_share(active_tasks: int, pool_size: int, world_size: int) -> int:
    """How many active tasks each process trains; refuses what cannot be split evenly."""
    if active_tasks > pool_size:
        raise ConfigError(f"active_tasks ({active_tasks}) is larger than the pool: 'tasks' lists {pool_size} tasks; "
                          f"list at least {active_tasks} tasks or lower active_tasks")
    if active_tasks % world_size:
        raise ConfigError(f"active_tasks ({active_tasks}) does not divide evenly over {world_size} processes (each "
                          f"process trains an equal share): set active_tasks to a multiple of {world_size} or launch "
                          f"a number of processes that divides {active_tasks}")
    return active_tasks // world_size


class TaskPool:
    """One process's block of pool tasks: which task is in which slot, the draw order, the stored task states.

    ``tasks`` are the global pool indices of this process's block; ``active`` the number of slots.
    """

    def __init__(self, tasks: Sequence[int], active: int, seed: int):
        if not 0 < active <= len(tasks):
            raise ConfigError(f"a pool block of {len(tasks)} tasks cannot fill {active} slots")
        self.tasks = list(tasks)
        self.active = active
        self.generator = torch.Generator().manual_seed(seed)
        self.remaining: list[int] = []  # the rest of the current permutation, in draw order
        self.slots: list[int] = []  # the global task index in each slot
        self.draws = 0
        self.stored: dict[int, dict] = {}  # task states (engine.task_state) of tasks between turns, on the CPU

    def _next(self) -> list[int]:
        """The next ``active`` tasks: the rest of the current permutation, then the first tasks of a new one
        (skipping those already drawn now; they stay in the new permutation's remainder for their next turn)."""
        drawn, self.remaining = self.remaining[:self.active], self.remaining[self.active:]
        if len(drawn) < self.active:
            order = [self.tasks[i] for i in torch.randperm(len(self.tasks), generator=self.generator).tolist()]
            fill = [i for i in order if i not in drawn][:self.active - len(drawn)]
            self.remaining = [i for i in order if i not in fill]
            drawn += fill
        return drawn

    def draw(self) -> list[tuple[int, int | None, int]]:
        """Draw the next tasks. Returns ``(slot, outgoing task or None, incoming task)`` for every slot whose task
        changes: tasks drawn again keep their slots, the others fill the freed slots in draw order."""
        drawn = self._next()
        self.draws += 1
        if not self.slots:
            self.slots = list(drawn)
            return [(s, None, i) for s, i in enumerate(drawn)]
        staying = set(drawn) & set(self.slots)
        incoming = [i for i in drawn if i not in staying]
        free = [s for s, i in enumerate(self.slots) if i not in staying]
        changes = [(s, self.slots[s], i) for s, i in zip(free, incoming)]
        for s, _, i in changes:
            self.slots[s] = i
        return changes

    def rotate(self, engine, make_head: Callable[[int], torch.nn.Module], source: Callable[[int], Callable],
               release: Callable[[int], None] | None = None) -> list[tuple[int, int | None, int]]:
        """Draw, then swap the engine's slots (call right after a reset). ``make_head(i)`` builds task i's head as
        on its first turn (its stored state is loaded over it), ``source(i)`` gives task i's batch source, and
        ``release(i)`` is called for every task that leaves (e.g. to move its data off the GPU)."""
        changes = self.draw()
        for slot, outgoing, _ in changes:
            self.stored[outgoing] = engine.task_state(slot)
            if release is not None:
                release(outgoing)
        for slot, _, incoming in changes:
            engine.set_task(slot, make_head(incoming), source(incoming), self.stored.pop(incoming, None))
        return changes

    def skipped_steps(self) -> int:
        """Skipped steps (non-finite losses) of the tasks between turns."""
        return sum(int(s["skipped_steps"]) for s in self.stored.values())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "remaining": list(self.remaining), "slots": list(self.slots),
                "draws": self.draws, "tasks": list(self.tasks), "stored": dict(self.stored)}

    def load_state_dict(self, state: dict) -> None:
        if list(state["tasks"]) != self.tasks or len(state["slots"]) != self.active:
            raise ConfigError(f"the checkpoint's pool block (tasks {state['tasks']}, {len(state['slots'])} active) is "
                              f"not this process's (tasks {self.tasks}, {self.active} active)")
        self.generator.set_state(state["generator"])
        self.remaining = [int(i) for i in state["remaining"]]
        self.slots = [int(i) for i in state["slots"]]
        self.draws = int(state["draws"])
        self.stored = {int(i): s for i, s in state["stored"].items()}
