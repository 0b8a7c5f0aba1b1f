"""``mixed_precision: auto``: bf16 autocast where this CPU computes bf16 in hardware and this run measures it faster.

bf16 autocast runs the inner forward/backward in bf16 while phi, the thetas, their optimizers and the meta-updates
stay fp32 (what the trainer promises for every precision). On a CPU with AMX (Intel Sapphire Rapids and later) or
AVX512-BF16 (Zen 4, Cooper Lake) oneDNN's bf16 convolutions are far faster than fp32 ones: ResNet-20 compiled bf16
measured 2.03x eager fp32 on the 2-core Xeon with AMX and eager bf16 1.59x on Zen 4 (benchmarks/RESULTS.md, "CPU
execution modes"). Elsewhere bf16 is emulated and slower, so ``auto`` is fp32 there without measuring.

Where the hardware has it, ``auto`` measures as ``channels_last: auto`` does (``autolayout.py``): the run's first
steps alternate fp32 and bf16 (one warm-up step each, then TRIAL_PAIRS interleaved pairs; every step trains as usual)
and bf16 stays on only if its fastest step was at least MIN_SPEEDUP faster than fp32's fastest. bf16 is not exact,
so the bar is higher than the layout's. The choice is recorded per machine (``compiled.RECORD_NAME``, keyed by CPU
model, threads, torch, backbone and input shape) and a later run takes the record, unless its own trial contradicts
the record (a record made under another load: ``contradicts``), in which case the run decides on its own timings
and re-records. The choice is kept in the checkpoint: a run resumed on another machine keeps the precision it
started with. On several processes the ranks agree (the mean of their speedups), so every task runs alike.

The default precision is DEFAULT_PRECISION, ``auto``. The rule was: ``auto`` only once the held-out accuracy of
inits meta-trained in bf16 is shown equivalent to fp32's on each suite (two one-sided tests within +-1 point over
>= 6 paired meta-seeds, ``benchmarks/bf16_accuracy.py``). It was, bf16 - fp32 with its 90% interval: glyph, 30
meta-seeds, -0.27 points [-0.64, +0.09]; colour, 16 meta-seeds, +0.12 points [-0.27, +0.51] (docs/results/cpu-modes.md).
Exact fp32 is ``mixed_precision: no`` (``--mixed-precision no``) whatever the default; the studies and
meta-validation use it.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

import torch

from . import DEFAULT_PRECISION, PRECISIONS
from .compiled import read_record, write_record

log = logging.getLogger(__name__)

TRIAL_PAIRS = 3
MIN_SPEEDUP = 1.10
#: A recorded choice is re-checked when this run's own trial lands on the other side of MIN_SPEEDUP by this factor.
CONTRADICTION = 1.15
MIN_PLANNED_STEPS = 100
#: /proc/cpuinfo flags of CPUs that compute bf16 in hardware (matrix tiles, or AVX-512 dot products).
BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}


def bf16_hardware(cpuinfo: str | None = None) -> str | None:
    """``AMX`` or ``AVX512-BF16`` when this CPU computes bf16 in hardware, else None (also where /proc/cpuinfo is
    not there: not Linux, where ``auto`` stays fp32)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    for flag, name in BF16_FLAGS.items():
        if flag in flags:
            return name
    return None


def autocast_factory(precision: str, device: torch.device) -> Callable | None:
    """The context-manager factory around each inner forward/backward: None for fp32 (``no``)."""
    if precision == "no":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def contradicts(recorded: float, measured: float, threshold: float = MIN_SPEEDUP) -> bool:
    """Whether this run's own speedup decides the other way than the recorded one (about THRESHOLD), by a clear
    margin (CONTRADICTION): a record made under another load is not kept against what the run measures now."""
    if recorded >= threshold:
        return measured * CONTRADICTION < threshold
    return measured >= threshold * CONTRADICTION


class AutoPrecision:
    """``use_bf16()`` says which precision the next step runs in, ``done(seconds)`` reports its time; after
    2 + 2 * trial_pairs steps ``decided`` is True and ``bf16`` holds the choice. ``agree(speedup)`` (several
    processes) returns the speedup all ranks decide on."""

    def __init__(self, key: Callable[[], str], trial_pairs: int = TRIAL_PAIRS,
                 agree: Callable[[float], float] | None = None):
        self.key, self.trial_pairs, self.agree = key, trial_pairs, agree
        self.times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        self.decided, self.bf16 = False, False
        self.speedup: float | None = None
        self.reason = "measuring"
        self._next = "fp32"

    def use_bf16(self) -> bool:
        if self.decided:
            return self.bf16
        # always the same alternation, recorded decision or not, so every run on a machine trains its first steps alike
        self._next = ("fp32", "bf16")[(len(self.times["fp32"]) + len(self.times["bf16"])) % 2]
        return self._next == "bf16"

    def done(self, seconds: float) -> None:
        if self.decided:
            return
        self.times[self._next].append(seconds)
        if min(len(v) for v in self.times.values()) <= self.trial_pairs:
            return
        # first step of each is warm-up (oneDNN primitives); of the rest the fastest: load only ever adds time
        measured = round(min(self.times["fp32"][1:]) / min(self.times["bf16"][1:]), 3)
        if self.agree is not None:
            measured = round(self.agree(measured), 3)
        record = read_record("precision:" + self.key())
        recorded = record.get("speedup") if isinstance(record, dict) else None
        if isinstance(recorded, (int, float)) and not contradicts(float(recorded), measured):
            self._decide(float(recorded), f"{recorded:.2f}x measured on this machine before; this run {measured:.2f}x")
            return
        how = f"over {self.trial_pairs} interleaved pairs of steps"
        if isinstance(recorded, (int, float)):
            how += f", re-measured: the record's {recorded:.2f}x is contradicted by this run's steps"
        self._decide(measured, how)
        write_record("precision:" + self.key(), {"speedup": measured})

    def _decide(self, speedup: float, how: str) -> None:
        self.speedup, self.bf16, self.decided = speedup, speedup >= MIN_SPEEDUP, True
        self.reason = f"auto: bf16 {speedup:.2f}x fp32's step speed, {how}"
        log.info("precision: %s (%s)", "bf16" if self.bf16 else "fp32", self.reason)

    def state_dict(self) -> dict:
        return {"times": {k: list(v) for k, v in self.times.items()}, "decided": self.decided, "bf16": self.bf16,
                "speedup": self.speedup, "reason": self.reason}

    def load_state_dict(self, state: dict) -> None:
        self.times = {k: list(v) for k, v in state["times"].items()}
        self.decided, self.bf16, self.speedup = state["decided"], state["bf16"], state["speedup"]
        self.reason = state.get("reason", self.reason)


def auto_precision_plan(device: torch.device, measurable: bool) -> tuple[bool, str]:
    """``(measure, reason)`` for ``auto``: measure only on a CPU with bf16 hardware in a measurable run (CPU,
    sequential, eager or ``compile: auto``, at least MIN_PLANNED_STEPS steps); otherwise fp32, and why."""
    hardware = bf16_hardware()
    if device.type != "cpu":
        return False, f"auto: fp32 on {device.type} (measured on the CPU only)"
    if hardware is None:
        return False, "auto: fp32 (this CPU has no bf16 hardware: no AMX or AVX512-BF16)"
    if not measurable:
        return False, "auto: fp32 (not measured: needs sequential execution, compile auto or off, >= 100 steps)"
    return True, f"auto: measuring bf16 against fp32 ({hardware})"



class StepPrecision:
    """Which precision each fine-tuning step runs in: ``setting`` as configured, or for ``auto`` an
    ``AutoPrecision`` trial over the first steps (recorded under a ``finetune:`` key, apart from meta-training's).
    While it measures, the caller leaves the layout alone (``measuring``) so that one choice is timed at a time."""

    def __init__(self, setting: str, device: torch.device, steps: int, key: Callable[[], str], trial_pairs: int):
        self.device, self.trial = device, None
        self.precision = "no" if setting == "auto" else setting
        if setting == "auto":
            measure, reason = auto_precision_plan(device, steps >= MIN_PLANNED_STEPS)
            if measure:
                self.trial, self.precision = AutoPrecision(lambda: "finetune:" + key(), trial_pairs), "measuring"
            log.debug("fine-tuning precision: %s", reason)

    @property
    def measuring(self) -> bool:
        return self.trial is not None

    @property
    def autocast(self) -> bool:
        return self.precision in ("bf16", "fp16")

    def context(self):
        """The autocast context of the next step (a null context in fp32)."""
        precision = ("bf16" if self.trial.use_bf16() else "no") if self.trial is not None else self.precision
        factory = autocast_factory(precision, self.device)
        return factory() if factory is not None else contextlib.nullcontext()

    def done(self, seconds: float) -> None:
        if self.trial is not None:
            self.trial.done(seconds)
            if self.trial.decided:
                self.precision, self.trial = "bf16" if self.trial.bf16 else "no", None
