"""The fine-tuning runs of ``ctinit evaluate`` and ``ctinit pick``, one after another or side by side in worker
processes, one per free CPU core.

Runs are independent, so on the CPU they can go side by side in one-thread processes instead of one after another
in one process of several threads (threads that meet at every operator wait on each other, and collapse when one is
descheduled; the trainer's ``--cpu-processes`` measured 2.11x and 1.46x that way, training/launch.py). For
fine-tuning the gain measured smaller: 1.10x for 4 runs of 200 steps on 2 idle cores, nothing for pick's 60-step
runs, because each worker costs seconds to start (it imports torch).

``workers="auto"`` (the default) runs side by side only where that pays: on the CPU, with at least two runs to do,
each of at least MIN_STEPS_FOR_WORKERS steps (or of a length set by epochs or early stopping), and at least two cores
free now (``ctinit.execution.cores``); then one worker per free core (at most one per run), the free cores shared
out as threads. Otherwise the runs go one after another in this process, as before. A run's result does not depend
on where it ran, up to the rounding of a different thread count.
"""
from __future__ import annotations

import dataclasses
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterator

from .errors import ConfigError
from .execution.orphans import die_with_parent
from .finetune import finetune
from .loading import load_init

#: Fine-tuning steps per run below which ``auto`` keeps the runs in this process: starting the workers costs seconds
#: (each imports torch). Measured on 2 idle cores (Intel Xeon with AMX, docs/newcomer.md): pick's 12 runs of 60 steps
#: took 32.5 s in 2 workers against 30.2 s in one process; an evaluation of 4 runs of 200 steps 44.4 s against 49.0 s.
MIN_STEPS_FOR_WORKERS = 200


@dataclasses.dataclass(frozen=True)
class RunJob:
    """One (init, task, seed) fine-tuning run of a grid; ``index`` is its place in the grid's order."""

    index: int
    label: str  # the init as the user named it
    source: object  # ctinit.loading.InitSource
    spec: str
    image_size: int
    seed: int
    config: object  # ctinit.finetune.FinetuneConfig, its seed set
    split: tuple  # (validation_fraction, score, max_train_per_class, max_train_samples): prepare_task's arguments


def plan_workers(requested: "str | int", pending: int, config, device: str | None) -> tuple[int, int | None, str]:
    """``(workers, threads per worker, why)`` for ``workers=REQUESTED`` (``auto`` or a number); 1 worker: the runs
    go in this process (threads None: torch's own setting)."""
    from .execution.cores import free_cores, usable_cores

    if isinstance(requested, str) and requested != "auto":
        try:
            requested = int(requested)
        except ValueError:
            raise ConfigError(f"--workers {requested}: give auto or a number of processes") from None
    if isinstance(requested, int) and (isinstance(requested, bool) or requested < 1):
        raise ConfigError(f"--workers {requested}: give auto or a number of processes >= 1")
    if device is not None and not str(device).startswith("cpu"):
        return 1, None, f"one process on {device}"
    if requested == "auto":
        import torch

        if device is None and torch.cuda.is_available():
            return 1, None, "one process on the GPU"
        long_enough = config.epochs is not None or config.early_stop or config.steps >= MIN_STEPS_FOR_WORKERS
        if pending < 2 or not long_enough:
            return 1, None, "one process (too few or too short runs to pay for starting workers)"
        cores = free_cores()
        workers = min(cores, pending)
        if workers < 2:
            return 1, None, "one process (one core free now)"
        return workers, max(1, cores // workers), f"{workers} worker processes ({cores} cores free now)"
    workers = min(requested, max(1, pending))
    if workers == 1:
        return 1, None, "one process (requested)"
    return workers, max(1, usable_cores() // workers), f"{workers} worker processes (requested)"


class TaskCache:
    """The prepared (task, validation) pairs of the runs in flight: a grid visits task by task, so the last few
    are kept and older ones dropped (a large task is not held twice for long)."""

    def __init__(self, keep: int = 2, preloaded: dict | None = None):
        self.keep, self.items = keep, dict(preloaded or {})

    def get(self, job: RunJob):
        from .tasks import load_task
        from .tasks.subsets import prepare_task

        key = (job.spec, job.image_size, job.seed)
        if key not in self.items:
            raw = load_task(job.spec, image_size=job.image_size, seed=job.seed)
            while len(self.items) >= self.keep:
                self.items.pop(next(iter(self.items)))
            self.items[key] = prepare_task(raw, job.seed, *job.split)
        return self.items[key]


def run_one(job: RunJob, tasks: TaskCache, device: str | None, on_step: Callable | None = None) -> dict:
    """Fine-tune JOB's init on its task; the run's record (what results.json keeps of it)."""
    task, validation = tasks.get(job)
    backbone = load_init(job.source, seed=job.seed)
    result = finetune(backbone, task, job.config, device=device, on_step=on_step, validation=validation)
    return {"init": job.label, "task": job.spec, "seed": job.seed,
            "test_accuracy": result.test_accuracy, "test_loss": result.test_loss,
            "train_loss": result.train_loss, "train_size": len(task.y_train),
            "curve": [[int(s), float(a)] for s, a in result.curve], "seconds": result.seconds,
            "channels_last": result.channels_last, "steps": result.steps,
            "planned_steps": result.planned_steps, "best_step": result.best_step,
            "stop_reason": result.stop_reason}


_WORKER: dict = {}


def _start_worker(threads: int, parent: int) -> None:
    die_with_parent(parent)  # first: importing torch takes seconds
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: it stops the workers
    torch.set_num_threads(threads)
    _WORKER["tasks"] = TaskCache()


def _run_in_worker(job: RunJob) -> dict:
    return run_one(job, _WORKER["tasks"], "cpu")


def run_jobs(jobs: list[RunJob], workers: int, threads: int | None, device: str | None, *,
             preloaded: dict | None = None, on_step: Callable | None = None) -> Iterator[tuple[RunJob, dict]]:
    """Yield ``(job, record)`` for every job: in grid order in this process (``workers`` 1; ``on_step`` is called
    after every step), else as the workers finish them."""
    if workers <= 1:
        tasks = TaskCache(preloaded=preloaded)
        for job in jobs:
            yield job, run_one(job, tasks, device, on_step)
        return
    import multiprocessing
    import os

    # spawn: a forked copy of a process whose torch has started its threads can hang
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(threads, os.getpid()))
    pending = {pool.submit(_run_in_worker, job): job for job in jobs}
    try:
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                yield job, future.result()
    finally:
        if pending:  # an error or an interrupt: stop the runs in progress too, not only the queued ones
            for future in pending:
                future.cancel()
            for process in list((pool._processes or {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["MIN_STEPS_FOR_WORKERS", "RunJob", "TaskCache", "plan_workers", "run_jobs", "run_one"]
