"""``channels_last: auto``: on the CPU, whether the convolutions run on channels-last inputs, measured per run.

Channels-last hands oneDNN its preferred memory format and skips the reorders around every convolution: on the 2-core
Zen 4 development machine it made a CTS step of convnet4-32 1.54x faster (2 threads) and ResNet-20's 1.21x
(benchmarks/RESULTS.md, "CPU execution modes"). It is the same fp32 training up to rounding (another summation order
inside the convolutions), but whether it is faster depends on the CPU, its ISA, the thread count and the shapes, so
``auto`` measures instead of assuming: the first steps of the run alternate between the two memory formats (one
warm-up step each, then TRIAL_PAIRS interleaved pairs), and channels-last stays on only if its fastest step was at
least MIN_SPEEDUP faster than the contiguous memory format's fastest. Every one of those steps trains as usual; only
the memory format of its inputs differs.

The choice is recorded beside ``compile: auto``'s (``compiled.RECORD_NAME``, keyed by CPU model, threads, torch,
backbone and input shape) and a later run on the same machine runs the same alternating first steps and then takes
the recorded choice instead of its own timings, so runs after the first one on a machine train alike (runs that
must be bitwise reproducible everywhere set ``channels_last`` to true or false). Runs shorter than
MIN_PLANNED_STEPS, and runs whose ``compile`` is set to a compiled mode, do not measure (contiguous).
"""
from __future__ import annotations

import logging
from typing import Callable

from .compiled import read_record, write_record
from .precision import contradicts

log = logging.getLogger(__name__)

TRIAL_PAIRS = 3
MIN_SPEEDUP = 1.05
MIN_PLANNED_STEPS = 100


class AutoChannelsLast:
    """``use_channels_last()`` says which memory format the next step runs in, ``done(seconds)`` reports its time; after
    2 + 2 * trial_pairs steps ``decided`` is True and ``channels_last`` holds the choice. Meta-training's steps
    (every task's) are long and use TRIAL_PAIRS; fine-tuning's are short and noisier, and use more."""

    def __init__(self, key: Callable[[], str], trial_pairs: int = TRIAL_PAIRS):
        self.key = key  # called at the end of the trial (the input shape is part of it)
        self.trial_pairs = trial_pairs
        self.times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
        self.decided = False
        self.channels_last = False
        self.speedup: float | None = None
        self._next = "contiguous"

    def use_channels_last(self) -> bool:
        if self.decided:
            return self.channels_last
        # The trial's steps always alternate the same way, recorded decision or not, so that every run on a
        # machine trains its first steps in the same memory formats (and, after the first run there, decides alike).
        steps = len(self.times["contiguous"]) + len(self.times["channels_last"])
        self._next = ("contiguous", "channels_last")[steps % 2]
        return self._next == "channels_last"

    def done(self, seconds: float) -> None:
        if self.decided:
            return
        self.times[self._next].append(seconds)
        if min(len(v) for v in self.times.values()) > self.trial_pairs:
            # The first step of each memory format is warm-up (oneDNN primitive creation, allocator) and not used; of
            # the rest, the fastest: other work on the machine only ever adds time to a step (on a loaded 2-core machine
            # fine-tuning steps took 20 or 60 ms at random), so the minimum is the least disturbed measurement.
            contiguous, last = (min(self.times[k][1:]) for k in ("contiguous", "channels_last"))
            measured = round(contiguous / last, 3)
            # (the record's key keeps its first name, "layout:", so that the choices machines recorded stay valid)
            record = read_record("layout:" + self.key())
            recorded = record.get("speedup") if isinstance(record, dict) else None
            # the record decides unless this run's own steps clearly contradict it (a record made under another load)
            if isinstance(recorded, (int, float)) and not contradicts(float(recorded), measured, MIN_SPEEDUP):
                self._decide(float(recorded), "measured on this machine before")
                return
            how = f"over {self.trial_pairs} interleaved pairs of steps"
            if isinstance(recorded, (int, float)):
                how += f", re-measured: this run's steps contradict the record's {recorded:.2f}x"
            # decided on the value recorded, so that the runs that take the record decide as this one did
            self._decide(measured, how)
            write_record("layout:" + self.key(), {"speedup": self.speedup})

    def _decide(self, speedup: float, how: str) -> None:
        self.speedup, self.channels_last, self.decided = speedup, speedup >= MIN_SPEEDUP, True
        log.info("channels_last: %s (auto: %.2fx the contiguous memory format's step speed, %s)",
                 "on" if self.channels_last else "off", speedup, how)

    # what a checkpoint keeps, so that a resumed run continues in the memory format this one chose
    def state_dict(self) -> dict:
        return {"times": {k: list(v) for k, v in self.times.items()}, "decided": self.decided,
                "channels_last": self.channels_last, "speedup": self.speedup}

    def load_state_dict(self, state: dict) -> None:
        self.times = {k: list(v) for k, v in state["times"].items()}
        self.decided, self.channels_last, self.speedup = state["decided"], state["channels_last"], state["speedup"]
