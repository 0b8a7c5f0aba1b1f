"""``ctinit-train --cpu-processes auto|N``: all the free cores on the CPU without knowing torchrun.

On the CPU, P one-thread processes (each training its block of tasks, one all-reduce of phi per meta-step) beat one
process with P threads: two 1-thread processes gave 2.11x (convnet4-32) and 1.46x (ResNet-20) the task-steps/s of one
2-thread process on the 2-core Zen 4 machine (benchmarks/RESULTS.md, "CPU execution modes"), because threads that
wait on each other at every operator collapse when either is descheduled, while processes only meet at the
meta-step. ``--cpu-processes`` runs them from inside ``ctinit-train``, with the same run folder, checkpoints, exact
resume and results as ``torchrun --nproc_per_node P`` (gloo, one machine).

How they start (``CPU_LAUNCHER_ENV``): on Linux ``fork``, elsewhere ``torchrun``. ``fork``: this process, with torch,
transformers and Accelerate already imported (``warm_imports``), forks the P one-thread processes and watches them
(``supervise``, much as torch's launcher does: signals passed on, the others stopped when one fails). Processes of
several threads each (fewer tasks than cores), and a caller that already runs Python threads (a notebook), get
torch's launcher: a forked OpenMP pool or lock would hang them. A forked process starts with everything imported, so the run's
start-up loses the launcher's and every process's imports (a 300-step convnet4-32 run on the 2-core Zen 4: its first
step 4.5 s after the command started instead of 10.1 s, 17.9 s in all instead of 22.8 s; docs/training.md). ``torchrun``: ``python -m torch.distributed.run`` runs ``ctinit_training.meta_train``
again in P fresh interpreters (``CTINIT_CPU_LAUNCHER=torchrun`` picks it on Linux too).

The split: ``N`` processes with the free cores shared out as threads. ``auto`` takes at most one process per core
this process may run on (its CPU affinity) and per task, and threads from the cores actually free
(``ctinit.execution.cores``: the usable cores less those busy now), so a busy machine gets one-thread processes:
beside two busy loops on the 2-core Zen 4, 500 steps of the quickstart recipe took 51-52 s as 2 one-thread processes
against 72-102 s as one (2 runs each, docs/results/cpu-modes.md); threads that wait on each other at every operator
are what collapses under load. Among the splits that fit, it takes the one this machine measured fastest for this
setup (every run records its task-steps/s per split and precision setting next to compile's record; a split keeps
its fastest, as load only slows a run) once the rule's split is among those measured, else the rule: one process per
core (at most one per task), the free cores shared out as threads. ``--resume`` keeps the checkpoint's number of
processes (a run resumes exactly only on as many processes as it started with).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ctinit.execution.cores import free_cores, usable_cores
from ctinit.execution.orphans import die_with_parent

#: ``auto`` keeps a run shorter than this in one process: starting the processes and their gloo group costs seconds.
MIN_STEPS_FOR_PROCESSES = 100
#: Set in the launched processes: the split they run as (``PxT``), so the main one records its speed.
SPLIT_ENV = "CTINIT_CPU_SPLIT"
#: ``fork`` (Linux's default) or ``torchrun``: how ``--cpu-processes`` starts its processes (see the module doc).
CPU_LAUNCHER_ENV = "CTINIT_CPU_LAUNCHER"
#: After one forked process fails: seconds the others get to stop on their own (a peer's closed connection ends
#: their collectives), then SIGTERM, then as long again before SIGKILL.
FAILURE_GRACE_SECONDS = 10.0


def launched() -> bool:
    """Whether this process was started by a launcher (torchrun, accelerate, or ``--cpu-processes``)."""
    return "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ


def split_key(config: "TrainConfig") -> str:
    from ctinit.execution.compiled import cpu_model

    return "split:" + json.dumps([cpu_model(), os.cpu_count(), config.backbone, config.image_size,
                                  config.batch_size, len(config.tasks), config.mixed_precision])


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
                 free: int | None = None, usable: int | None = None) -> tuple[int, int, str]:
    """``(processes, threads, why)`` for ``--cpu-processes REQUESTED``; threads 0: torch's own count. FREE: the
    cores free now, USABLE: the cores this process may run on (default: counted, ``ctinit.execution.cores``)."""
    from ctinit.errors import ConfigError
    from ctinit.execution.compiled import read_record

    free = free_cores() if free is None else free
    usable = max(free, usable_cores() if usable is None else usable)
    tasks = len(config.tasks)
    if resume and checkpoint_world(out):
        world = checkpoint_world(out)
        threads = max(1, free // world) if world > 1 else 0  # one process: torch's own threads, as it started
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
        return processes, max(1, free // processes), "requested"
    if config.steps < MIN_STEPS_FOR_PROCESSES:
        return 1, 0, f"auto: one process ({config.steps} steps: too short to pay for starting several)"
    # Processes from the usable cores, threads from the free ones: one-thread processes share busy cores gently
    # (a descheduled one delays the others only at the meta-step, and the scheduler gives each its share), threads
    # that wait on each other at every operator do not (see the module doc).
    most = min(usable, tasks)
    fits = {f"{p}x{t}": (p, t) for p in range(1, most + 1) for t in range(1, max(1, free // p) + 1)}
    measured = {k: v for k, v in (read_record(split_key(config)) or {}).items()
                if k in fits and isinstance(v, (int, float))}
    rule = f"{most}x{max(1, free // most)}"
    cores = f"{free} of {usable} cores free" if free < usable else f"{free} free cores"
    if rule not in measured:  # the rule's split first: splits measured so far are compared only once it is among them
        return *fits[rule], f"auto: {cores}, one process per core (at most one per task)"
    best = max(measured, key=measured.get)
    return *fits[best], f"auto: {cores}; {best} measured fastest here ({measured[best]:.1f} task-steps/s)"


def record_split(config: "TrainConfig", task_steps_per_s: float | None, split: str | None,
                 steps_run: int | None = None) -> None:
    """A run made with --cpu-processes: its speed as SPLIT (``PxT``), for ``auto``; written by the main process only
    (the others return). A split keeps the fastest speed measured with it: other work on the machine only ever slows
    a run, so a run made under load does not count against a split measured on idle cores."""
    from ctinit.execution.compiled import read_record, write_record

    if int(os.environ.get("RANK", "0")) != 0:
        return
    steps_run = config.steps if steps_run is None else steps_run  # a resumed run: the steps it ran itself
    if not split or not task_steps_per_s or steps_run < MIN_STEPS_FOR_PROCESSES:  # short runs: not auto's choice
        return
    entry = dict(read_record(split_key(config)) or {})
    previous = entry.get(split)
    entry[split] = round(max(float(task_steps_per_s), previous if isinstance(previous, (int, float)) else 0.0), 2)
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


def cpu_launcher() -> str:
    """``fork`` or ``torchrun`` (CPU_LAUNCHER_ENV; default: fork on Linux, where it is safe before any thread starts)."""
    from ctinit.errors import ConfigError

    chosen = os.environ.get(CPU_LAUNCHER_ENV) or ("fork" if sys.platform == "linux" else "torchrun")
    if chosen not in ("fork", "torchrun"):
        raise ConfigError(f"{CPU_LAUNCHER_ENV}={chosen}: set it to fork or torchrun, or unset it")
    if chosen == "fork" and not hasattr(os, "fork"):
        raise ConfigError(f"{CPU_LAUNCHER_ENV}=fork: this platform cannot fork; set it to torchrun")
    return chosen


def run_processes(processes: int, threads: int, body: Callable[[], int], argv: list[str]) -> int:
    """Run the training as PROCESSES processes of THREADS threads and return the exit status: forked, each running
    ``body()`` (which returns its exit status), or through torch's launcher running ``ctinit_training.meta_train
    ARGV`` (see the module doc)."""
    if cpu_launcher() == "torchrun":
        return launch(argv, processes, threads)
    warm_imports()
    if not single_threaded():  # a forked child gets one of the threads: a lock another one held stays held
        print("--cpu-processes: this process already runs threads, so its processes start through torch's launcher",
              file=sys.stderr, flush=True)
        return launch(argv, processes, threads)
    if threads > 1:  # an OpenMP pool this process started (a script calling main()) would hang a child's first
        return launch(argv, processes, threads)  # parallel operator; one thread never enters one
    return fork(processes, threads, body)


def single_threaded() -> bool:
    """Whether this process runs no Python thread but this one, so that forking it is safe: a forked child keeps
    only the forking thread, and a lock another thread held would stay held (a notebook's kernel runs several).
    Native pools are not counted: OpenBLAS's (numpy's, scipy's) stop and restart around a fork on their own, and
    torch starts its OpenMP pool at its first parallel operation, which this process has not run (``fork``)."""
    import threading

    return threading.active_count() == 1


def warm_imports() -> None:
    """What every process imports on its way to the first step, imported once here before forking."""
    import accelerate  # noqa: F401
    import tqdm.auto  # noqa: F401

    import ctinit.models.backbones  # noqa: F401 - transformers' modeling code, the slowest of them


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(rank: int, processes: int, threads: int, port: int) -> dict[str, str]:
    """What torch's launcher sets in each process (Accelerate and ``torch.distributed`` read it)."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(processes),
            "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": str(threads), SPLIT_ENV: f"{processes}x{threads}"}


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def fork(processes: int, threads: int, body: Callable[[], int]) -> int:
    """Fork PROCESSES processes of THREADS threads, each running ``body()`` as its rank, and supervise them.
    Call it while this process runs one Python thread (``single_threaded``), and with THREADS > 1 only where this
    process has run no torch operation (a forked OpenMP pool hangs a child's first parallel operator; one thread
    never enters one: ``run_processes`` forks only one-thread processes)."""
    # rank 0 binds the port in its first step (Accelerate's process group, a fraction of a second after the fork)
    port, supervisor = free_port(), os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # none lost or half-handled while forking
    children: dict[int, int] = {}
    try:
        for rank in range(processes):
            try:
                pid = os.fork()
            except OSError:  # the ones started would wait for the missing one in their first collective
                for started in children:
                    os.kill(started, signal.SIGKILL)
                    os.waitpid(started, 0)
                raise
            if pid == 0:
                run_child(body, rank, processes, threads, port, supervisor, previous, mask)
            children[pid] = rank
        return supervise(children, mask)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def run_child(body, rank, processes, threads, port, supervisor, handlers, mask) -> None:
    """In a forked process: become rank RANK, run BODY, exit with its status; never returns to the caller."""
    import torch  # imported already (fork's caller did)

    status = 1
    try:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        die_with_parent(supervisor)  # SIGTERM (checkpoint and stop) if ctinit-train is killed
        os.environ.update(process_env(rank, processes, threads, port))
        torch.set_num_threads(threads)
        result = body()
        status = result if isinstance(result, int) else 0 if result is None else 1
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:  # noqa: BLE001 - body reports its own errors; this is a last resort
        try:
            import traceback

            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001 - a closed pipe or a second signal: exit all the same
            pass
        os._exit(status & 0xFF)


def supervise(children: dict[int, int], mask=frozenset()) -> int:
    """Wait for the forked processes (pid -> rank; only those: other children of this process are left alone).
    SIGTERM/SIGINT are passed on to them (they checkpoint and stop). When one fails the others get
    FAILURE_GRACE_SECONDS to stop on their own (a peer's closed connection ends their collectives), then SIGTERM,
    then SIGKILL. Returns the first failure's exit status (128 + signal for a killed process), else 0. MASK: the
    signal mask to restore once the handlers are in place (signals blocked while forking arrive then)."""
    running = dict(children)

    def pass_on(signum, frame):
        for pid in running:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, pass_on) for s in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    status, failed_at, escalated = 0, None, 0
    try:
        while running:
            ended = [(pid, code) for pid, code in (os.waitpid(pid, os.WNOHANG) for pid in list(running)) if pid]
            for pid, code in ended:
                del running[pid]
                exit_status = os.waitstatus_to_exitcode(code)
                exit_status = 128 - exit_status if exit_status < 0 else exit_status
                if exit_status != 0 and status == 0:
                    status, failed_at = exit_status, time.monotonic()
            if running and failed_at is not None:
                waited = time.monotonic() - failed_at
                if escalated < 2 and waited > FAILURE_GRACE_SECONDS * (escalated + 1):
                    escalated += 1
                    for other in running:  # not reaped yet, so the pid is still this child's
                        os.kill(other, signal.SIGTERM if escalated == 1 else signal.SIGKILL)
            if running and not ended:
                time.sleep(0.05)
        return status
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
