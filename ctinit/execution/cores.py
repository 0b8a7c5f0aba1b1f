"""How many CPU cores are usable and how many are free now: what ``ctinit-train --cpu-processes auto`` (processes
from the usable cores, threads from the free ones) and the fine-tuning workers of ``ctinit evaluate``/``pick`` (one
per free core) choose from. No torch.

The count is this process's CPU affinity less the cores busy right now, read from /proc/stat over a short window
(SAMPLE_SECONDS): the load average lags by a minute, so on a machine that has just finished a job it reports busy
cores that are idle (a 2-core machine at load 0.8 would count one core free), and a job that has just started is not
in it yet. Where /proc/stat cannot be read (not Linux) the 1-minute load average stands in.
"""
from __future__ import annotations

import os
import time

SAMPLE_SECONDS = 0.25


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """``(busy, total)`` jiffies over all CPUs from /proc/stat's first line, or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(sample_seconds: float = SAMPLE_SECONDS) -> float:
    """How many cores' worth of CPU other work is using now (from /proc/stat over SAMPLE_SECONDS; this process is
    idle meanwhile), else the 1-minute load average."""
    before = _cpu_times()
    if before is not None:
        time.sleep(sample_seconds)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def free_cores(busy: float | None = None) -> int:
    """Cores this process may run on, less those busy with other work now (at least 1). A core counts as busy when
    more than half of it is in use (``busy`` rounded)."""
    cores = usable_cores()
    busy = busy_cores() if busy is None else busy
    return max(1, min(cores, cores - int(busy + 0.5)))


__all__ = ["SAMPLE_SECONDS", "busy_cores", "free_cores", "usable_cores"]
