"""``ctinit-train --cpu-processes auto|N``: all the free cores on the CPU without knowing torchrun.

On the CPU, P one-thread processes (each training its block of tasks, one all-reduce of phi per meta-step) beat one
process with P threads: two 1-thread processes gave 2.11x (convnet4-32) and 1.46x (ResNet-20) the task-steps/s of one
2-thread process on the 2-core Zen 4 machine (benchmarks/RESULTS.md, "CPU execution modes"), because threads that
wait on each other at every operator collapse when either is descheduled, while processes only meet at the
meta-step. ``--cpu-processes`` launches the run through torch's launcher (``torch.distributed.run``, gloo) from
inside ``ctinit-train``: the same run folder, checkpoints, exact resume and results as ``torchrun --nproc_per_node P``.

The split: ``N`` processes with the free cores shared out as threads; ``auto`` counts the cores actually free
(``ctinit.execution.cores``: this process's CPU affinity less the cores busy now, so a busy machine gets fewer
processes and threads rather than oversubscribed ones) and takes, among the splits that fit them, the one this machine measured fastest for this
setup (every run records its task-steps/s per split next to compile's record) once the rule's split is among those
measured, else the rule: one 1-thread process per free core (at most one per task). ``--resume`` keeps the checkpoint's number of processes (a run resumes
exactly only on as many processes as it started with).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ctinit.execution.cores import free_cores

#: ``auto`` keeps a run shorter than this in one process: starting the processes and their gloo group costs seconds.
MIN_STEPS_FOR_PROCESSES = 100
#: Set in the launched processes: the split they run as (``PxT``), so the main one records its speed.
SPLIT_ENV = "CTINIT_CPU_SPLIT"


def launched() -> bool:
    """Whether this process was started by a launcher (torchrun, accelerate, or ``--cpu-processes``)."""
    return "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ


def split_key(config: "TrainConfig") -> str:
    from ctinit.execution.compiled import cpu_model

    return "split:" + json.dumps([cpu_model(), os.cpu_count(), config.backbone, config.image_size,
                                  config.batch_size, len(config.tasks)])


def checkpoint_world(out: str | Path) -> int | None:
    """The number of processes that wrote the newest checkpoint in OUT (None: no checkpoint)."""
    best = None
    for meta in Path(out).glob("checkpoints/step-*/meta.json"):
        try:
            data = json.loads(meta.read_text())
            step, world = int(data["step"]), int(data["world_size"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if best is None or step > best[0]:
            best = (step, world)
    return best[1] if best else None


def choose_split(requested: str, config: "TrainConfig", out: str | Path, resume: bool,
                 cores: int | None = None) -> tuple[int, int, str]:
    """``(processes, threads, why)`` for ``--cpu-processes REQUESTED``; threads 0: torch's own count."""
    from ctinit.errors import ConfigError
    from ctinit.execution.compiled import read_record

    cores = free_cores() if cores is None else cores
    tasks = len(config.tasks)
    if resume and checkpoint_world(out):
        world = checkpoint_world(out)
        threads = max(1, cores // world) if world > 1 else 0  # one process: torch's own threads, as it started
        return world, threads, f"--resume: the checkpoint's {world} processes"
    if requested != "auto":
        try:
            processes = int(requested)
        except ValueError:
            raise ConfigError(f"--cpu-processes {requested}: give auto or a number of processes") from None
        if processes < 1:
            raise ConfigError(f"--cpu-processes {requested}: give auto or a number of processes >= 1")
        if processes == 1:  # one process as before --cpu-processes: torch's threads (OMP_NUM_THREADS, else all)
            return 1, 0, "requested"
        return processes, max(1, cores // processes), "requested"
    if config.steps < MIN_STEPS_FOR_PROCESSES:
        return 1, 0, f"auto: one process ({config.steps} steps: too short to pay for starting several)"
    fits = {f"{p}x{t}": (p, t) for p in range(1, min(cores, tasks) + 1) for t in range(1, cores // p + 1)}
    measured = {k: v for k, v in (read_record(split_key(config)) or {}).items()
                if k in fits and isinstance(v, (int, float))}
    p = min(cores, tasks)
    rule = f"{p}x{max(1, cores // p)}"
    if rule not in measured:  # the rule's split first: splits measured so far are compared only once it is among them
        return p, max(1, cores // p), f"auto: {cores} free cores, one process per core (at most one per task)"
    best = max(measured, key=measured.get)
    p, t = fits[best]
    return p, t, f"auto: {cores} free cores; {best} measured fastest here ({measured[best]:.1f} task-steps/s)"


def record_split(config: "TrainConfig", task_steps_per_s: float | None, split: str | None) -> None:
    """In the main process of a run made with --cpu-processes: its speed as SPLIT (``PxT``), for ``auto``."""
    from ctinit.execution.compiled import read_record, write_record

    if not split or not task_steps_per_s or config.steps < MIN_STEPS_FOR_PROCESSES:  # short runs: not auto's choice
        return
    entry = dict(read_record(split_key(config)) or {})
    entry[split] = round(float(task_steps_per_s), 2)
    write_record(split_key(config), entry)


def without_flag(argv: list[str], flag: str = "--cpu-processes") -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def launch(argv: list[str], processes: int, threads: int) -> int:
    """Run ``ctinit_training.meta_train ARGV`` as PROCESSES processes of THREADS threads (torch's launcher, one
    machine, gloo); SIGTERM/SIGINT reach the processes (they checkpoint and stop). Returns the exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), SPLIT_ENV: f"{processes}x{threads}"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc_per_node", str(processes), "-m", "ctinit_training.meta_train", *argv]
    child = subprocess.Popen(command, env=env)
    forward = {s: signal.signal(s, lambda signum, frame: child.send_signal(signum))
               for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # forwarded; wait for the processes to checkpoint
                continue
    finally:
        for s, handler in forward.items():
            signal.signal(s, handler)
