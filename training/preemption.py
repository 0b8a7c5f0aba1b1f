"""SIGTERM/SIGINT during training: noted by a handler, acted on at the loop's next agreement point, where a
checkpoint is written and the run stops with :class:`Preempted`."""
from __future__ import annotations

import signal
import sys
from pathlib import Path


class Preempted(Exception):
    """SIGTERM/SIGINT arrived: a checkpoint was written and the run stops."""

    def __init__(self, signum: int, path: Path):
        super().__init__(f"stopped by signal {signum}; checkpoint {path}")
        self.signum, self.path = signum, path

    def report(self, prog: str) -> int:
        """Say on stderr where the checkpoint is and how to go on; returns the exit status (128 + the signal)."""
        print(f"{prog}: {self}; continue with --resume", file=sys.stderr, flush=True)
        return 128 + int(self.signum)


class StopSignals:
    """``with StopSignals() as stop:`` while inside, SIGTERM and SIGINT only set ``stop.signum``; the previous
    handlers come back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _note(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def stop(self, path: Path) -> Preempted:
        return Preempted(self.signum or signal.SIGTERM, path)
