"""``compile: backbone``: every task's backbone forward, and through AOTAutograd its backward, compiled by inductor.

The tasks' backbones are copies of one module, so one compiled function serves all of them: dynamo treats a
module's parameters and buffers as graph inputs (``inline_inbuilt_nn_modules``), and T tasks share one graph. The
parameters stay views into the engine's flat ``[T, P]`` buffers and gradients still accumulate into ``grads``; heads,
loss, inner optimizer and meta-update stay eager. On the CPU inductor fuses batch norm, ReLU and pooling into C++
loops around oneDNN convolutions, which is where an eager step spends its non-convolution time (benchmarks/RESULTS.md,
"CPU execution modes"). The result is the same training up to floating-point rounding (other summation orders in
the fused kernels): tests/test_compiled.py holds it against eager over a few hundred steps.

``compile: auto`` on the CPU decides per run whether this pays off (``AutoCompile``): it times the first eager steps,
compiles only when the run's remaining steps at the expected speedup save more than compiling is expected to cost,
then times compiled and eager steps interleaved and keeps the compiled forward only if it measured faster. What a
compile cost and what it gained are recorded next to torch's compile cache (which makes a second compile of the same
graph take seconds), keyed by CPU model, torch version, backbone and input shape, so the next run's estimate is
this machine's own measurement rather than a default.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
from pathlib import Path
from typing import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Before anything was measured on this machine for this graph: what compiling is assumed to cost (seconds; a cold
#: compile of ResNet-20 took about this on 2 idle cores, the ConvNets less; a second compile hits torch's cache) and
#: the speedup assumed for the decision to try (the trial then measures the real one).
DEFAULT_COMPILE_SECONDS = 60.0
DEFAULT_SPEEDUP = 1.3
#: The compiled forward is kept only if compiled steps measured at least this much faster than eager ones.
MIN_SPEEDUP = 1.05
EAGER_STEPS = 3  # timed before deciding (the first one is warm-up and not used)
TRIAL_PAIRS = 4  # compiled and eager steps interleaved after compiling
RECORD_NAME = "ctinit-compile-backbone.json"


def _call(module: nn.Module, *args, **kwargs):
    return module(*args, **kwargs)


def compile_forward() -> Callable:
    """One compiled ``module(*args)`` for every task's backbone (inductor, static shapes)."""
    return torch.compile(_call, dynamic=False)


class CompiledBackbone:
    """Task t's backbone as the loss function sees it: calls go through the shared compiled function, attributes
    (config, feature_dim, ...) are the module's."""

    def __init__(self, module: nn.Module, compiled: Callable):
        self.module, self.compiled = module, compiled

    def __call__(self, *args, **kwargs):
        return self.compiled(self.module, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.module, name)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def inductor_cache_dir() -> Path:
    """torch's compile cache folder (``TORCHINDUCTOR_CACHE_DIR``, else ``TMPDIR/torchinductor_USER``), found as torch
    finds it (torch._inductor.runtime.cache_dir_utils) without importing torch._inductor, which takes about a second:
    every run reads its records, most never compile."""
    import getpass
    import re
    import tempfile

    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured:
        return Path(os.path.abspath(configured))
    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
    return Path(tempfile.gettempdir()) / ("torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))


def record_path() -> Path | None:
    """The per-machine record of measured choices, beside torch's compile cache (None where it cannot be made)."""
    try:
        folder = inductor_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return folder / RECORD_NAME
    except OSError:  # nothing is recorded; every run measures for itself
        return None


def graph_key(backbone: nn.Module, input_shape, autocast: bool) -> str:
    """What determines the compiled graph and its speed: CPU model, threads, torch, backbone, input, precision."""
    shapes = [(n, tuple(p.shape)) for n, p in backbone.named_parameters()]
    text = json.dumps([cpu_model(), torch.get_num_threads(), torch.__version__, type(backbone).__name__, shapes,
                       list(input_shape), autocast])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: The record's fields a reader uses, and what each must be (a bad value makes the entry dropped, not fatal).
_ENTRY_FIELDS = {"speedup": lambda v: v > 0, "compile_seconds": lambda v: v >= 0}


def _valid_entry(entry) -> bool:
    """An entry's fields are finite numbers in range (never a bool, a string or a list)."""
    import math

    return isinstance(entry, dict) and all(
        isinstance(entry[k], (int, float)) and not isinstance(entry[k], bool) and math.isfinite(entry[k]) and ok(entry[k])
        for k, ok in _ENTRY_FIELDS.items() if k in entry)


def _read_records(path: Path) -> tuple[dict, str | None]:
    """``(valid entries, what was wrong or None)``. Only a regular file is read (a FIFO would block the run)."""
    if not path.exists() and not path.is_symlink():
        return {}, None
    if not path.is_file():
        return {}, "not a regular file"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return {}, f"unreadable ({type(e).__name__})"
    if not isinstance(records, dict):
        return {}, "not a JSON object"
    valid = {k: v for k, v in records.items() if _valid_entry(v)}
    bad = len(records) - len(valid)
    return valid, (f"{bad} entr{'y' if bad == 1 else 'ies'} of the wrong type" if bad else None)


def read_record(key: str) -> dict | None:
    """This machine's measurement for ``key``, or None. A damaged record file is never fatal: it is rewritten
    without its bad entries (a warning names it), and the run measures for itself."""
    path = record_path()
    if path is None:
        return None
    records, damage = _read_records(path)
    if damage:
        log.warning("measurement record %s: %s; rewritten with its valid entries only (runs measure again)",
                    path, damage)
        _write_records(path, lambda valid: None)
        records, _ = _read_records(path)
    return records.get(key)


def _open_lock(path: Path) -> int:
    """The lock file's descriptor, opened without blocking (a FIFO in its place is an OSError, not a hang)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o644)
    try:
        import fcntl
    except ImportError:  # not POSIX: unlocked, as before
        return fd
    fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
    return fd


def _write_records(path: Path, change: Callable[[dict], None]) -> None:
    """Read the valid entries, ``change`` them, write them back (under a lock, atomically; the temporary file never
    stays). A failure is a warning naming the file: the measurement is only not recorded."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # processes on one machine (the study's two suites, say) write here at once: the read-modify-write holds a
        # lock, or one process's entry would be lost and its next run would measure (and maybe decide) again
        fd = _open_lock(path.with_suffix(".lock"))
        try:
            records, _ = _read_records(path)
            change(records)
            tmp.write_text(json.dumps(records, indent=1))
            os.replace(tmp, path)
        finally:
            os.close(fd)
    except (OSError, ValueError) as e:
        log.warning("could not write the measurement record %s (%s); the measurement is not kept",
                    path, e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__)
    finally:
        tmp.unlink(missing_ok=True)


def write_record(key: str, entry: dict) -> None:
    path = record_path()
    if path is not None:
        _write_records(path, lambda records: records.__setitem__(key, entry))


class AutoCompile:
    """``compile: auto`` on the CPU: which steps run compiled, decided from this run's own timings.

    ``use_compiled()`` says how the next step runs, ``done(seconds)`` reports how long it took. Phases: ``eager``
    (EAGER_STEPS timed eager steps), then the decision to compile or not, ``trial`` (the first compiled step, which
    compiles, then TRIAL_PAIRS compiled/eager pairs), then ``on`` or ``off`` for the rest of the run.
    """

    def __init__(self, remaining_steps: Callable[[], int], key: Callable[[], str]):
        self.remaining_steps, self.key = remaining_steps, key
        self.phase = "eager"
        self.eager: list[float] = []
        self.compiled: list[float] = []
        self.compile_seconds: float | None = None
        self.speedup: float | None = None
        self.reason = "measuring"
        self._next_compiled = False

    def use_compiled(self) -> bool:
        if self.phase == "eager" and len(self.eager) >= EAGER_STEPS:
            self._decide()
        if self.phase == "trial":
            self._next_compiled = self.compile_seconds is None or len(self.compiled) <= len(self.eager) - EAGER_STEPS
            return self._next_compiled
        return self.phase == "on"

    def _decide(self) -> None:
        step_s = statistics.median(self.eager[1:])
        record = read_record(self.key()) or {}
        if record.get("speedup") is not None and record["speedup"] < MIN_SPEEDUP:
            self.phase, self.reason = "off", f"measured {record['speedup']:.2f}x on this machine before"
            log.info("compile: off (auto: %s)", self.reason)
            return
        cost = record.get("compile_seconds", DEFAULT_COMPILE_SECONDS)
        speedup = record.get("speedup", DEFAULT_SPEEDUP)
        saving = self.remaining_steps() * step_s * (1 - 1 / speedup)
        if saving <= cost:
            self.phase = "off"
            self.reason = (f"the run's remaining {self.remaining_steps()} steps would save about {saving:.0f} s at "
                           f"{speedup:.2f}x, compiling costs about {cost:.0f} s")
            log.info("compile: off (auto: %s)", self.reason)
            return
        self.phase = "trial"
        log.info("compile: trying backbone (auto: about %.0f s saved at %.2fx over the remaining %d steps, compiling "
                 "costs about %.0f s)", saving, speedup, self.remaining_steps(), cost)

    def done(self, seconds: float) -> None:
        if self.phase == "eager":
            self.eager.append(seconds)
        elif self.phase == "trial":
            if self._next_compiled and self.compile_seconds is None:
                self.compile_seconds = max(seconds - statistics.median(self.eager[1:]), 0.0)
            elif self._next_compiled:
                self.compiled.append(seconds)
            else:
                self.eager.append(seconds)
            if len(self.compiled) >= TRIAL_PAIRS and len(self.eager) - EAGER_STEPS >= TRIAL_PAIRS:
                self._conclude()

    def _conclude(self) -> None:
        eager = statistics.median(self.eager[-TRIAL_PAIRS:])
        self.speedup = eager / statistics.median(self.compiled)
        self.phase = "on" if self.speedup >= MIN_SPEEDUP else "off"
        self.reason = (f"compiled in {self.compile_seconds:.0f} s, {self.speedup:.2f}x eager's step speed over "
                       f"{TRIAL_PAIRS} interleaved pairs of steps")
        log.info("compile: %s (auto: %s)", "backbone" if self.phase == "on" else "off", self.reason)
        write_record(self.key(), {"compile_seconds": round(self.compile_seconds, 2), "speedup": round(self.speedup, 3),
                                  "cpu": cpu_model(), "torch": torch.__version__})

    # what a checkpoint keeps, so that a resumed run runs its steps (compiled or eager) as the first run would have
    STATE_KEYS = ("phase", "eager", "compiled", "compile_seconds", "speedup", "reason")

    def state_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in ((k, getattr(self, k)) for k in self.STATE_KEYS)}

    def load_state_dict(self, state: dict) -> None:
        for k in self.STATE_KEYS:
            setattr(self, k, list(state[k]) if isinstance(state[k], list) else state[k])
