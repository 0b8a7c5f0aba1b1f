"""The trainer's view of the processes: which tasks each trains, and the few collectives the loop needs."""
from __future__ import annotations

import torch

from ctinit.errors import ConfigError


def shard_tasks(num_tasks: int, world_size: int) -> list[list[int]]:
    """Contiguous blocks of global task indices, one per process; sizes differ by at most one."""
    if world_size > num_tasks:
        raise ConfigError(f"{world_size} processes but only {num_tasks} tasks: launch at most {num_tasks} processes")
    return [list(range(r * num_tasks // world_size, (r + 1) * num_tasks // world_size)) for r in range(world_size)]


class Collectives:
    """The few collectives the loop needs; no-ops on one process."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device) -> bool:
        if self.world_size == 1:
            return flag
        return bool(self.sum_(torch.tensor([float(flag)], device=device)).item() > 0)

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()
