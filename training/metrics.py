"""The run's metrics: accumulated on the device every step, read back every ``log_every`` steps into one record of
``OUT/metrics.jsonl`` (and the log, the progress bar, a tracker), with the non-finite checks at those points."""
from __future__ import annotations

import logging
import math
import time

import torch

from ctinit.errors import CtinitError
from ctinit.jsonl import read_jsonl

from .config import TrainConfig
from .rundir import RunDir

log = logging.getLogger("ctinit.meta_train")


class TrainingStopped(CtinitError):
    """The run cannot go on (for example, a task's loss stayed non-finite)."""


def check_nonfinite(skipped: torch.Tensor, worst_streak: torch.Tensor, streak_now: list[int], names: list[str],
                    step: int, limit: int) -> None:
    """At a read-back point: warn about tasks that skipped steps since the last one, and stop the run when a task's
    run of skipped steps reached ``limit`` (``worst_streak``: the longest run per local task since then)."""
    worst = worst_streak.tolist()
    for name, n, run, now in zip(names, skipped.tolist(), worst, streak_now):
        if n:
            log.warning("up to step %d: non-finite inner loss on task %s, %d step(s) skipped (longest run %d, %d in a "
                        "row now)", step, name, int(n), run, now)
    t = max(range(len(worst)), key=worst.__getitem__)
    if worst[t] >= limit:
        raise TrainingStopped(
            f"task {names[t]} had a non-finite inner loss {limit} steps in a row (max_nonfinite_steps; {worst[t]} by "
            f"step {step}, checked every log_every steps): lower inner_optimizer.lr, use mixed_precision=bf16 instead "
            "of fp16, or check the task's data")


def keep_metrics_until(run: RunDir, step: int, resumed: bool) -> None:
    """Main process, at the start: ``metrics.jsonl`` holds only the records a resumed checkpoint covers (none for a
    fresh run)."""
    kept = []
    if resumed and run.metrics_path.is_file():
        lines, dropped = read_jsonl(run.metrics_path)
        if dropped:
            log.warning("%s: ignored %d incomplete line(s) (a kill mid-write)", run.metrics_path, dropped)
        kept = [line for line, record in lines if isinstance(record, dict) and record.get("step", 0) <= step]
    run.write_metrics(kept)


class MetricsLog:
    """Per global task on the device: loss, accuracy, skipped steps and steps trained; per slot the longest run of
    skipped steps. Nothing is read on the host between read-back points."""

    def __init__(self, config: TrainConfig, names: list[str], slots: list[int], device, start_step: int):
        self.config, self.names, self.device = config, names, device
        self.sums = torch.zeros(4, len(names), device=device)
        self.worst_streak = torch.zeros(len(slots), dtype=torch.long, device=device)
        self.set_slots(slots)
        self.start_step, self.started = start_step, time.perf_counter()
        self.tasks_per_step = config.active_tasks or len(names)

    def set_slots(self, slots: list[int]) -> None:
        self.slots, self.slot_index = list(slots), torch.tensor(slots, device=self.device)

    def add(self, result, engine) -> None:
        """One step's results (device operations only)."""
        self.sums[0, self.slot_index] += result.losses
        self.sums[3, self.slot_index] += 1
        if result.accuracies is not None:
            self.sums[1, self.slot_index] += result.accuracies
        self.sums[2, self.slot_index] += result.nonfinite
        torch.maximum(self.worst_streak, engine.skip_streak, out=self.worst_streak)

    def check_nonfinite(self, engine, step: int) -> None:
        """Stop the run if a task's skipped steps ran ``max_nonfinite_steps`` in a row (a host read)."""
        check_nonfinite(self.sums[2, self.slot_index], self.worst_streak, engine.nonfinite_streak,
                        [self.names[i] for i in self.slots], step, self.config.max_nonfinite_steps)
        self.worst_streak.zero_()

    def read_back(self, step: int, result, engine, phi_start: torch.Tensor, comm) -> dict:
        """The record of the steps since the last read-back (summed over processes); the sums start again."""
        # max_nonfinite_steps is checked here: a run whose task stays non-finite stops at the next read-back (its
        # skipped steps are masked, so the extra steps change nothing).
        self.check_nonfinite(engine, step)
        sums = comm.sum_(self.sums)
        trained = [i for i, n in enumerate(sums[3].tolist()) if n > 0]  # every task, without a pool
        loss, acc = (sums[:2, trained] / sums[3, trained]).tolist()
        window = [self.names[i] for i in trained]
        record = {
            "step": step, "mean_loss": sum(loss) / len(trained), "mean_accuracy": sum(acc) / len(trained),
            "task_loss": dict(zip(window, loss)), "task_accuracy": dict(zip(window, acc)),
            "skipped_steps": dict(zip(window, sums[2, trained].tolist())),
            "phi_distance": (engine.phi.detach() - phi_start).norm().item(),
            "delta_phi_norm": result.delta.norm().item() if result.delta is not None else None,
            "task_steps_per_s": (step - self.start_step) * self.tasks_per_step / (time.perf_counter() - self.started),
        }
        if self.config.active_tasks:
            record["active_tasks"] = window  # the tasks that trained since the last record
        self.sums.zero_()
        return record

    @staticmethod
    def finite(record: dict) -> bool:
        return math.isfinite(record["phi_distance"])

    def report(self, record: dict, run: RunDir, bar, steps: int) -> None:
        """Main process: the record to metrics.jsonl, the progress bar, the log and a tracker (``log_with``)."""
        run.append_metrics(record)
        bar.set_postfix(loss=f"{record['mean_loss']:.3f}", acc=f"{record['mean_accuracy']:.3f}",
                        dphi=f"{record['delta_phi_norm'] or 0:.2e}", tps=f"{record['task_steps_per_s']:.0f}")
        log.info("step %d/%d inner loss %.4f accuracy %.3f |delta phi| %.2e task-steps/s %.1f", record["step"], steps,
                 record["mean_loss"], record["mean_accuracy"], record["delta_phi_norm"] or 0.0, record["task_steps_per_s"])

    def track(self, record: dict, accelerator) -> None:
        """Every process (Accelerate's trackers log on the main one): the record to the ``log_with`` tracker."""
        if self.config.log_with:
            accelerator.log({"inner_loss": record["mean_loss"], "inner_accuracy": record["mean_accuracy"],
                             "delta_phi_norm": record["delta_phi_norm"] or 0.0,
                             "task_steps_per_s": record["task_steps_per_s"],
                             **{f"loss/{n}": v for n, v in record["task_loss"].items()},
                             **{f"accuracy/{n}": v for n, v in record["task_accuracy"].items()}}, step=record["step"])


def active_names(pool, names: list[str], comm, device) -> list[str]:
    """The names of the tasks now in a slot on any process (one small all-reduce per draw)."""
    active = torch.zeros(len(names), device=device)
    active[pool.slots] = 1
    comm.sum_(active)
    return [n for n, a in zip(names, active.tolist()) if a > 0]
