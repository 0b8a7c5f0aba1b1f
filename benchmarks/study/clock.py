"""Wall and CPU time per stage of a study run."""
from __future__ import annotations

import time

from .runs import say


class Clock:
    def __init__(self):
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._open: tuple[str, float, float] | None = None

    def start(self, name: str) -> None:
        self._open = (name, time.perf_counter(), time.process_time())

    def stop(self) -> None:
        name, t0, c0 = self._open
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0
        self._open = None
        say(f"  ({name}: {self.wall[name] / 60:.1f} min wall, {self.cpu[name] / 60:.1f} min CPU so far)")

    def totals(self) -> dict:
        return {"timings_seconds": {**self.wall, "total": time.perf_counter() - self.started},
                "cpu_seconds": {**self.cpu, "total": time.process_time() - self.cpu_started}}
