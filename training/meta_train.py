"""Meta-train a shared initialization, on one process or many (Accelerate / torchrun; CPUs or GPUs).

    ctinit-train --config quickstart --out runs/qs [key=value ...]
    accelerate launch --num_processes 8 -m ctinit_training.meta_train --config ... --out ...
    torchrun --nproc_per_node 2 -m ctinit_training.meta_train --config ... --out ... [--resume]

Tasks are sharded over processes (contiguous blocks, uneven splits allowed); every task's head, data order and
augmentation are seeded by its global index, so the trained phi does not depend on the number of processes
(except with a task pool, ``active_tasks``: each process draws from its own block; see ctinit_training.pool).
The meta-step is one all-reduce of a flat fp32 buffer the size of phi.

Writes ``OUT/init/`` (config.json + model.safetensors: phi only), ``OUT/config.yaml`` (the resolved config),
``OUT/train.log``, ``OUT/metrics.jsonl`` (one JSON object every ``log_every`` steps) and, with
``checkpoint_every`` or on SIGTERM/SIGINT, ``OUT/checkpoints/step-N/`` (see ctinit_training.checkpoint).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import dataclasses
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ctinit.version import __version__
from ctinit.entrypoint import ArgumentParser, run_command
from ctinit.atomic import staged_dir, write_text
from ctinit.errors import CheckpointError, ConfigError, CtinitError, NonFiniteError, WriteError
from ctinit.jsonl import read_jsonl
from ctinit.loading import save_init
from ctinit.meta import RULES, TrajectoryEngine
from ctinit.models import TaskHead
from ctinit.tasks import BatchSampler, DeviceBatchSampler, load_task, task_name

from . import checkpoint as ckpt
from . import rundir
from .config import RECIPES, changed_keys, dump_config, initial_backbone, load_config, record_init_from
from .pool import TaskPool, pool_share

log = logging.getLogger("ctinit.meta_train")
#: The command's name, as the user types it (errors and notes on stderr start with it).
PROG = "ctinit-train"


class TrainingStopped(CtinitError):
    """The run cannot go on (for example, a task's loss stayed non-finite)."""


class Preempted(Exception):
    """SIGTERM/SIGINT arrived: a checkpoint was written and the run stops."""

    def __init__(self, signum: int, path: Path):
        super().__init__(f"stopped by signal {signum}; checkpoint {path}")
        self.signum, self.path = signum, path


def setup_logging(out: Path, is_main: bool) -> None:
    root = logging.getLogger("ctinit")
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if is_main:
        handlers.append(logging.FileHandler(out / "train.log"))
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)


def shard_tasks(num_tasks: int, world_size: int) -> list[list[int]]:
    """Contiguous blocks of global task indices, one per process; sizes differ by at most one."""
    if world_size > num_tasks:
        raise ConfigError(f"{world_size} processes but only {num_tasks} tasks: launch at most {num_tasks} processes")
    return [list(range(r * num_tasks // world_size, (r + 1) * num_tasks // world_size)) for r in range(world_size)]


def task_seed(seed: int, index: int) -> int:
    return seed * 1000 + index


def meta_lr_at(base_lr: float, schedule: str, step: int, steps: int) -> float:
    """The meta learning rate in force at global step ``step`` (1-based) of ``steps``: ``constant`` keeps
    ``base_lr``; ``cosine`` is ``base_lr * (1 + cos(pi (step - 1) / steps)) / 2``, ``base_lr`` at step 1 and
    decaying towards 0 after the last step. A meta-update at step s (every step for CTS, every K for Reptile)
    uses the rate of step s."""
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps))
    raise ConfigError(f"unknown meta_lr_schedule '{schedule}': use constant or cosine")


def set_meta_lr(engine, config: dict, step: int) -> None:
    """Before global step ``step``: the meta optimizer's rate for that step's meta-update (if it has one)."""
    if config["meta_lr_schedule"] != "constant":
        lr = meta_lr_at(config["meta_optimizer"]["lr"], config["meta_lr_schedule"], step, config["steps"])
        for group in engine.meta_optimizer.param_groups:
            group["lr"] = lr


def heldout_split(task, fraction: float, seed: int):
    """``(train, heldout)``: per class, ``round(fraction * n)`` (at least 1, at most n - 1) seeded examples of
    the task's train split go to ``heldout`` (as its train split); the rest stay. The test split is untouched."""
    return task.split_train(fraction, seed)  # one routine, shared with validation splits (ctinit pick)


def make_head(feature_dim: int, num_classes: int, seed: int) -> TaskHead:
    """A head whose initial weights depend only on (seed, global task index), not on the process layout."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TaskHead(feature_dim, num_classes)


class Collectives:
    """The few collectives the loop needs; no-ops on one process."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device) -> bool:
        if self.world_size == 1:
            return flag
        return bool(self.sum_(torch.tensor([float(flag)], device=device)).item() > 0)

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


def autocast_factory(precision: str, device: torch.device):
    if precision == "no":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def run(config: dict, out: str | Path, progress: bool = True, resume: bool = False, overwrite: bool = False) -> dict:
    """Meta-train with ``config`` (see training/config.py) and export phi to ``out/init``. Returns a summary.

    OUT belongs to this run while it trains (``OUT/.lock``, see training/rundir.py). A folder holding another run is
    refused unless ``resume`` (the same config; only this run's checkpoints are used) or ``overwrite`` (the other
    run's outputs are deleted first)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder; pass a new folder or a run folder to --resume")
    if resume and overwrite:
        raise ConfigError("--resume continues the run in OUT and --overwrite deletes it: pass one of them")
    is_main = int(os.environ.get("RANK", "0")) == 0  # before Accelerate starts: what torchrun/accelerate set
    lock = rundir.RunLock(out, log=lambda message: print(f"{PROG}: {message}", file=sys.stderr, flush=True))
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        if is_main:
            prepare_run_dir(out, config, resume, overwrite)
        return _train(config, out, progress, resume)
    finally:
        lock.release()


def prepare_run_dir(out: Path, config: dict, resume: bool, overwrite: bool) -> None:
    """Main process, holding the lock: refuse or clear another run's folder; give a new run its id."""
    previous = rundir.holds_a_run(out)
    if overwrite and previous:
        print(f"{PROG}: --overwrite: deleting the earlier run's {', '.join(previous)} in {out}", file=sys.stderr)
        rundir.clear_run(out)
    elif resume and (out / "config.yaml").is_file():
        try:
            import yaml

            saved = yaml.safe_load((out / "config.yaml").read_text())
        except Exception as e:  # noqa: BLE001 - an unreadable config.yaml cannot be compared
            raise ConfigError(f"{out}/config.yaml: unreadable ({' '.join(str(e).split())[:200]}); cannot check that "
                              "--resume continues the same run") from None
        changed = changed_keys(saved, config) if isinstance(saved, dict) else ["config.yaml"]
        if changed:
            raise ConfigError(f"cannot resume {out}: config keys {changed} differ from the run's config.yaml and would "
                              "change the result; restore them, or start over with --overwrite or another --out")
    elif not resume and previous:
        raise ConfigError(f"{out} holds another run ({', '.join(previous)}): continue it with --resume (same config), "
                          "replace it with --overwrite, or pass another --out")
    if not (resume and (rundir.read_run_id(out) or ckpt.complete_steps(out, None))):
        rundir.new_run_id(out)  # a fresh run, or --resume with nothing to resume


def _train(config: dict, out: Path, progress: bool, resume: bool) -> dict:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    out = Path(out)
    accelerator = Accelerator(cpu=config["device"] == "cpu" or not torch.cuda.is_available(),
                              log_with=config["log_with"], project_dir=str(out))
    rank, world, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    comm = Collectives(world)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    comm.barrier()
    setup_logging(out, is_main)
    shards = shard_tasks(len(config["tasks"]), world)
    mine = shards[rank]
    names = [task_name(spec) for spec in config["tasks"]]
    run_id = rundir.read_run_id(out)  # None: a folder from before runs had ids (its checkpoints have none either)
    # A task pool (active_tasks): every process trains an equal share of the active tasks, drawn from its block.
    pool = TaskPool(mine, pool_share(config["active_tasks"], len(config["tasks"]), world), config["seed"]) \
        if config["active_tasks"] else None

    # Resuming: check the newest complete checkpoint of this run before any data is loaded.
    resume_from, start_step = None, 0
    if resume:
        resume_from = ckpt.latest(out, run_id)
        if resume_from is None:
            log.info("--resume: no complete checkpoint in %s, starting from step 0", ckpt.checkpoint_root(out))
        else:
            meta = ckpt.read_meta(resume_from)
            if meta["world_size"] != world:
                raise CheckpointError(f"{resume_from} was written by {meta['world_size']} processes; resume it with "
                                      f"{meta['world_size']} processes (this launch has {world})")
            changed = changed_keys(meta["config"], config)
            if changed:
                raise ConfigError(f"cannot resume {resume_from}: config keys {changed} differ from the checkpoint's "
                                  "and would change the result; restore them or start a new run directory")
            start_step = int(meta["step"])
            if config["steps"] < start_step and config["algorithm"] != "scratch":
                raise ConfigError(f"steps = {config['steps']} is below the step of the checkpoint to resume "
                                  f"({resume_from}, step {start_step}): pass steps >= {start_step}")

    # Every process loads its own tasks; one failure stops every process before training starts.
    tasks, heldout_tasks, error = [], [], None
    use_heldout = config["heldout_fraction"] > 0 and RULES[config["algorithm"]].direction == "heldout_gradient"
    try:
        for i in mine:
            task = load_task(config["tasks"][i], image_size=config["image_size"], seed=config["seed"])
            if config["max_train_per_class"]:
                task = task.subset_train(int(config["max_train_per_class"]), seed=config["seed"])
            if use_heldout:  # FOMAML's held-out gradient from a validation split, as in the official code
                task, heldout = heldout_split(task, config["heldout_fraction"], task_seed(config["seed"], i))
                heldout_tasks.append(heldout.to(device))
            tasks.append(task.to(device) if pool is None else task)  # a pool's data goes to the device per turn
        validation = config["validation"]
        val_tasks = [load_task(spec, image_size=config["image_size"], seed=validation["seed"])
                     for spec in validation["tasks"]] if (is_main and validation["every"]) else []
    except CtinitError as e:
        error = e
    if comm.any(error is not None, device):
        raise error or ConfigError("another process could not load its tasks; see its error line")
    if is_main:
        dump_config(config, out / "config.yaml")

    rank_state = ckpt.read_state(resume_from / f"rank-{rank}") if resume_from is not None else None
    if rank_state is not None:
        check_head_sizes(rank_state, dict(zip(mine, tasks)), names, resume_from)
    torch.manual_seed(config["seed"])
    backbone = initial_backbone(config).to(device)  # fresh weights, or init_from's (architecture checked)
    # compile graphs/inductor: batches drawn on the device (counter-based augmentation, other draws than BatchSampler's)
    sampler_class = DeviceBatchSampler if config["compile"] in ("graphs", "inductor") else BatchSampler
    samplers = [sampler_class(t.x_train, t.y_train, config["batch_size"], seed=task_seed(config["seed"], i),
                             augment=config["augment"], hflip=t.hflip, channels=backbone.config.num_channels)
                for i, t in zip(mine, tasks)]
    by_index = {i: (t, s) for i, t, s in zip(mine, tasks, samplers)}

    def task_head(i: int) -> TaskHead:
        return make_head(backbone.feature_dim, by_index[i][0].num_classes, task_seed(config["seed"], i)).to(device)

    def task_source(i: int) -> BatchSampler:  # a pool task's data comes to the device for its turn
        task, sampler = by_index[i]
        sampler.x, sampler.y = task.x_train.to(device), task.y_train.to(device)
        return sampler

    def release(i: int) -> None:
        task, sampler = by_index[i]
        sampler.x, sampler.y = task.x_train, task.y_train

    if pool is not None:
        if rank_state is not None:
            pool.load_state_dict(rank_state["pool"])
        else:
            pool.draw()
    slots = mine if pool is None else pool.slots  # the global task index of each engine slot
    # Unaugmented, with their own seeds (the training samplers' draws are the same with or without them).
    heldout_samplers = [BatchSampler(t.x_train, t.y_train, config["batch_size"], seed=task_seed(config["seed"], i) + 1,
                                     augment=False, hflip=t.hflip, channels=backbone.config.num_channels)
                        for i, t in zip(mine, heldout_tasks)]
    engine = TrajectoryEngine(
        backbone, [task_head(i) for i in slots], [task_source(i) for i in slots], rule=config["algorithm"],
        reset_period=config["reset_period"],
        meta_interval=config["meta_interval"], shift=config["shift"], reset=config["reset"],
        reset_heads=config["reset_heads"], inner_optimizer=config["inner_optimizer"],
        meta_optimizer=config["meta_optimizer"], meta_exclude=config["meta_exclude"],
        all_reduce=comm.sum_ if world > 1 else None, num_tasks_total=config["active_tasks"] or len(config["tasks"]),
        autocast=autocast_factory(config["mixed_precision"], device),
        grad_scaling=config["mixed_precision"] == "fp16", execution=config["execution"],
        compile=config["compile"], channels_last=config["channels_last"],
        heldout_batches=heldout_samplers or None, planned_steps=config["steps"],
    )
    samplers_state = samplers + heldout_samplers  # what a checkpoint saves and a resume restores
    phi_start = engine.phi.detach().clone()  # the run's start (phi_distance), rebuilt from the seed on --resume
    best = {"accuracy": -1.0, "step": None}
    if resume_from is not None:
        best = meta.get("best_validation", best)
        state = rank_state
        try:
            engine.load_state_dict(state["engine"])
            for sampler, s in zip(samplers_state, state["samplers"]):
                sampler.load_state_dict(s)
            ckpt.set_rng_state(state["rng"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{resume_from}: does not fit this run's model and tasks ({type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:200]}); delete this step folder or start over with "
                                  "--overwrite") from None
        log.info("resumed from %s (step %d)", resume_from, start_step)

    log.info("world size %d on %s, precision %s (phi and meta-updates fp32); task-to-process map: %s", world, device,
             config["mixed_precision"], "; ".join(f"process {r}: {', '.join(names[i] for i in s)}" for r, s in enumerate(shards)))
    log.info("algorithm %s, backbone %s, meta_interval %d, reset_period %d, shift %s, %d meta-learned parameters",
             config["algorithm"], config["backbone"], engine.meta_interval, engine.reset_period, engine.shift,
             engine.layout.size)
    if pool is not None:
        log.info("task pool: %d tasks, %d active (%d per process, each from its block), a new draw every %d steps",
                 len(config["tasks"]), config["active_tasks"], pool.active, config["reset_period"])
        log.info("step %d: draw %d: active tasks %s", start_step, pool.draws, ", ".join(active_names(pool, names, comm, device)))
    if config["log_with"]:
        accelerator.init_trackers(config["project_name"], config={k: str(v) for k, v in config.items()})

    steps = config["steps"] if config["algorithm"] != "scratch" else 0
    metrics_path = out / "metrics.jsonl"
    if is_main:
        kept = []
        if resume_from is not None and metrics_path.is_file():  # drop records the checkpoint does not cover
            lines, dropped = read_jsonl(metrics_path)
            if dropped:
                log.warning("%s: ignored %d incomplete line(s) (a kill mid-write)", metrics_path, dropped)
            kept = [l for l, record in lines if isinstance(record, dict) and record.get("step", 0) <= start_step]
        write_text(metrics_path, "".join(l + "\n" for l in kept))

    stop = {"signum": None}

    def on_signal(signum, frame):
        stop["signum"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    num_tasks = len(config["tasks"])
    tasks_per_step = config["active_tasks"] or num_tasks
    # Everything logged accumulates on the device and is read back every log_every steps only (the read-back
    # points): loss, accuracy, skipped steps and steps trained per global task, and per slot the longest run of
    # skipped steps.
    sums = torch.zeros(4, num_tasks, device=device)
    mine_index = torch.tensor(slots, device=device)
    worst_streak = torch.zeros(len(slots), dtype=torch.long, device=device)
    count, start = 0, time.perf_counter()
    try:
        bar = tqdm(range(start_step + 1, steps + 1), desc=f"meta-train {config['algorithm']}", disable=not (progress and is_main),
                   file=sys.stderr, dynamic_ncols=True, unit="step", initial=start_step, total=steps)
        for step in bar:
            set_meta_lr(engine, config, step)
            result = engine.step()
            sums[0, mine_index] += result.losses
            sums[3, mine_index] += 1
            if result.accuracies is not None:
                sums[1, mine_index] += result.accuracies
            sums[2, mine_index] += result.nonfinite
            torch.maximum(worst_streak, engine.skip_streak, out=worst_streak)
            if pool is not None and step % config["reset_period"] == 0:
                # The outgoing tasks' skip runs are checked before they leave their slots (a host read every K steps).
                check_nonfinite(sums[2, mine_index], worst_streak, engine.nonfinite_streak, [names[i] for i in slots],
                                step, config["max_nonfinite_steps"])
                worst_streak.zero_()
                # The engine has just reset (theta == phi): the next draw takes the slots.
                pool.rotate(engine, task_head, task_source, release)
                slots = pool.slots
                mine_index = torch.tensor(slots, device=device)
                log.info("step %d: draw %d: active tasks %s", step, pool.draws, ", ".join(active_names(pool, names, comm, device)))
            count += 1
            read_back = step % config["log_every"] == 0 or step == steps
            if read_back:
                # max_nonfinite_steps is checked here, at the read-back points: a run whose task stays non-finite
                # stops at the next one (its skipped steps are masked, so the extra steps change nothing).
                check_nonfinite(sums[2, mine_index], worst_streak, engine.nonfinite_streak, [names[i] for i in slots],
                                step, config["max_nonfinite_steps"])
                worst_streak.zero_()
                comm.sum_(sums)
                trained = [i for i, n in enumerate(sums[3].tolist()) if n > 0]  # every task, without a pool
                loss, acc = (sums[:2, trained] / sums[3, trained]).tolist()
                skipped = sums[2, trained].tolist()
                window = [names[i] for i in trained]
                elapsed = time.perf_counter() - start
                record = {
                    "step": step, "mean_loss": sum(loss) / len(trained), "mean_accuracy": sum(acc) / len(trained),
                    "task_loss": dict(zip(window, loss)), "task_accuracy": dict(zip(window, acc)),
                    "skipped_steps": dict(zip(window, skipped)),
                    "phi_distance": (engine.phi.detach() - phi_start).norm().item(),
                    "delta_phi_norm": result.delta.norm().item() if result.delta is not None else None,
                    "task_steps_per_s": (step - start_step) * tasks_per_step / elapsed,
                }
                if not math.isfinite(record["phi_distance"]):
                    check_finite_phi(engine, out, step, run_id)
                if pool is not None:
                    record["active_tasks"] = window  # the tasks that trained since the last record
                if is_main:
                    with open(metrics_path, "a") as f:  # one write per line: a kill leaves at worst a partial last line
                        f.write(json.dumps(record) + "\n")
                    bar.set_postfix(loss=f"{record['mean_loss']:.3f}", acc=f"{record['mean_accuracy']:.3f}",
                                    dphi=f"{record['delta_phi_norm'] or 0:.2e}", tps=f"{record['task_steps_per_s']:.0f}")
                    log.info("step %d/%d inner loss %.4f accuracy %.3f |delta phi| %.2e task-steps/s %.1f", step, steps,
                             record["mean_loss"], record["mean_accuracy"], record["delta_phi_norm"] or 0.0,
                             record["task_steps_per_s"])
                if config["log_with"]:
                    accelerator.log({"inner_loss": record["mean_loss"], "inner_accuracy": record["mean_accuracy"],
                                     "delta_phi_norm": record["delta_phi_norm"] or 0.0,
                                     "task_steps_per_s": record["task_steps_per_s"],
                                     **{f"loss/{n}": v for n, v in record["task_loss"].items()},
                                     **{f"accuracy/{n}": v for n, v in record["task_accuracy"].items()}}, step=step)
                sums.zero_()
                count = 0
            if validation["every"] and step % validation["every"] == 0:
                if is_main:
                    accuracy = meta_validate(engine.phi_module, val_tasks, validation)
                    improved = accuracy > best["accuracy"]
                    if improved:
                        best = {"accuracy": accuracy, "step": step}
                        check_finite_phi(engine, out, step, run_id)
                        with staged_dir(out / "best", tmp=out / "best.tmp", old=out / "best.old",
                                        kept=ckpt.kept(out, run_id)) as tmp:  # never a half-written best/
                            save_init(engine.phi_module, tmp, {"algorithm": config["algorithm"], "steps": step,
                                                               "validation": {**validation, **best}})
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps({"step": step, "validation_accuracy": accuracy, "best": best}) + "\n")
                    log.info("step %d meta-validation accuracy %.4f%s", step, accuracy,
                             " (best so far: wrote OUT/best)" if improved else f" (best {best['accuracy']:.4f} at step {best['step']})")
                    if config["log_with"]:
                        accelerator.log({"validation_accuracy": accuracy}, step=step)
                comm.barrier()
            checkpoint_due = bool(config["checkpoint_every"]) and step % config["checkpoint_every"] == 0
            # On several processes the stop flag is agreed on (an all-reduce and a host read) at read-back and
            # checkpoint points only; one process checks it every step at no cost.
            signalled = comm.any(stop["signum"] is not None, device) if (world == 1 or read_back or checkpoint_due) else False
            if checkpoint_due or signalled:
                path = save_checkpoint(out, step, engine, samplers_state, config, shards, comm, rank, is_main, best,
                                       run_id, pool)
                if signalled:
                    raise Preempted(stop["signum"] or signal.SIGTERM, path)
        bar.close()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    seconds = time.perf_counter() - start

    made_with = {
        "algorithm": config["algorithm"],
        "config": {k: v for k, v in config.items() if k != "tasks"},
        "tasks": [{"spec": spec, "name": n} for spec, n in zip(config["tasks"], names)],
        "steps": steps, "seed": config["seed"], "world_size": world,
        "skipped_steps": int(sum(engine.skipped_steps)) + (pool.skipped_steps() if pool is not None else 0),
    }
    record_init_from(made_with, config)
    if world == 1:
        for entry, t in zip(made_with["tasks"], tasks):
            entry.update(num_classes=t.num_classes, train_size=len(t.y_train), test_size=len(t.y_test))
    summary = {"init": str(out / "init"), "steps": steps, "seconds": seconds,
               "task_steps_per_s": (steps - start_step) * tasks_per_step / seconds if seconds > 0 and steps > start_step else None}
    # Nothing non-finite is exported. A checkpoint of the last step is written before the export (also with
    # checkpoint_every=0), so a failed export (a full disk) leaves a run to --resume; with checkpoint_every=0 it is
    # deleted once the export is written. If that checkpoint does not fit, the export (phi only, far smaller) is
    # still tried. The export goes to OUT/init.tmp and is renamed to OUT/init when complete.
    check_finite_phi(engine, out, steps, run_id)
    if steps > start_step and not (config["checkpoint_every"] and steps % config["checkpoint_every"] == 0):
        try:
            save_checkpoint(out, steps, engine, samplers_state, config, shards, comm, rank, is_main, best, run_id, pool)
        except WriteError as e:
            log.warning("%s; exporting the initialization anyway", e)
    if is_main:
        with staged_dir(out / "init", tmp=out / "init.tmp", old=out / "init.old", kept=ckpt.kept(out, run_id)) as tmp:
            save_init(engine.phi_module, tmp, made_with)
            _fault_point("export")
        if not config["checkpoint_every"]:
            shutil.rmtree(ckpt.checkpoint_root(out) / f"step-{steps}", ignore_errors=True)
            with contextlib.suppress(OSError):
                ckpt.checkpoint_root(out).rmdir()  # only if empty
        log.info("wrote %s (steps %d-%d in %.1f s)", out / "init", start_step + 1, steps, seconds)
    comm.barrier()
    if config["log_with"]:
        accelerator.end_training()
    return summary


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


def meta_validate(phi_module, tasks, validation: dict) -> float:
    """Mean test accuracy of a copy of phi briefly fine-tuned on each meta-validation task."""
    import copy

    from ctinit.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(steps=validation["steps"], batch_size=validation["batch_size"],
                            optimizer={"name": "adam", "lr": validation["lr"]}, seed=validation["seed"], progress=False)
    device = next(phi_module.parameters()).device
    accuracies = [finetune(copy.deepcopy(phi_module), task, config, device=device).test_accuracy for task in tasks]
    return sum(accuracies) / len(accuracies)


def _fault_point(name: str, step: int | None = None) -> None:
    """Test hook: ``CTINIT_FAULT=NAME`` or ``NAME:STEP`` kills this process with SIGKILL at the named point
    (``checkpoint``: its files written, not yet renamed into place; ``export``: the init written to OUT/init.tmp, not
    yet renamed), for the fault-injection tests. Does nothing otherwise."""
    if os.environ.get("CTINIT_FAULT") in (name, f"{name}:{step}"):
        os.kill(os.getpid(), signal.SIGKILL)


def check_finite_phi(engine, out: Path, step: int, run_id) -> None:
    """Stop before a non-finite phi reaches a checkpoint or an export (the last finite checkpoint stays)."""
    if not bool(torch.isfinite(engine.phi.detach()).all()):
        last = ckpt.latest(out, run_id)
        raise NonFiniteError(
            f"phi became non-finite by step {step} (a meta-update too large: lower meta_optimizer.lr or "
            f"inner_optimizer.lr); nothing was exported; the last finite checkpoint is "
            f"{last if last is not None else 'none (checkpoint_every=0)'}")


def save_checkpoint(out, step, engine, samplers, config, shards, comm, rank, is_main, best=None, run_id=None,
                    pool=None) -> Path:
    check_finite_phi(engine, out, step, run_id)
    tmp = ckpt.tmp_dir(out, step)
    with ckpt.writing(out, step, run_id):  # a failed write (a full disk) frees its space, names the checkpoint kept
        if is_main:
            tmp.mkdir(parents=True, exist_ok=True)
        comm.barrier()
        state = {"engine": engine.state_dict(), "samplers": [s.state_dict() for s in samplers], "rng": ckpt.rng_state()}
        if pool is not None:
            state["pool"] = pool.state_dict()  # the draw state and every stored task state
        ckpt.write_state(state, tmp / f"rank-{rank}")
        comm.barrier()
        final = ckpt.checkpoint_root(out) / f"step-{step}"
        if is_main:
            meta = {"step": step, "world_size": comm.world_size, "task_map": shards, "config": config,
                    "library_version": __version__, "best_validation": best, "run_id": run_id}
            _fault_point("checkpoint", step)
            final = ckpt.finalize(out, step, meta, config["keep_checkpoints"])
            log.info("checkpoint %s", final)
    comm.barrier()
    return final


def push_run(out, repo_id: str, private: bool = False) -> None:
    """Export the finished run into a temporary folder and upload it with ``ctinit-hub push``'s code; main process only."""
    import tempfile

    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    from ctinit_hub.export import export_run
    from ctinit_hub.remote import push

    with tempfile.TemporaryDirectory(prefix="ctinit-export-") as tmp:
        export = export_run(out, Path(tmp) / Path(repo_id).name, repo_id=repo_id)
        info = push(export, repo_id, private=private, log=lambda m: print(m, file=sys.stderr))
    print(f"{PROG}: pushed to {repo_id}: {getattr(info, 'commit_url', info)}", file=sys.stderr)
def active_names(pool: TaskPool, names: list[str], comm: Collectives, device) -> list[str]:
    """The names of the tasks now in a slot on any process (one small all-reduce per draw)."""
    active = torch.zeros(len(names), device=device)
    active[pool.slots] = 1
    comm.sum_(active)
    return [n for n, a in zip(names, active.tolist()) if a > 0]


def check_head_sizes(rank_state: dict, tasks: dict, names: list[str], path: Path) -> None:
    """Refuse a checkpoint whose heads do not fit the tasks' classes (a task's data changed since it was written)."""
    pool = rank_state.get("pool")
    slots = pool["slots"] if pool is not None else sorted(tasks)
    heads = {int(i): s["head"] for i, s in zip(slots, rank_state["engine"]["tasks"])}
    if pool is not None:
        heads.update({int(i): s["head"] for i, s in pool["stored"].items()})
    for i, head in sorted(heads.items()):
        saved = head["weight"].shape[0]
        if i in tasks and saved != tasks[i].num_classes:
            raise CheckpointError(f"cannot resume {path}: task {names[i]} has {tasks[i].num_classes} classes but its "
                                  f"head in the checkpoint has {saved}; restore the task's data or start a new run directory")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="ctinit-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bundled = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    parser.add_argument("--config", required=True, help=f"a YAML recipe file or a bundled recipe's name ({bundled})")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUT from its newest complete checkpoint (same config)")
    parser.add_argument("--overwrite", action="store_true", help="delete the earlier run in OUT and start a new one")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--push-to-hub", default=None, metavar="ORG/NAME",
                        help="at the end, export the run and upload it to this Hub repo (main process only)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. steps=200 meta_optimizer.lr=0.1")
    args = parser.parse_args(argv)

    def command() -> int:
        try:
            config = load_config(args.config, args.overrides)
            if args.push_to_hub:
                from ctinit.hubio import check_push

                check_push(args.push_to_hub)  # a bad repo id, no token or offline fails before training, not after
            run(config, args.out, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
            if args.push_to_hub:
                push_run(args.out, args.push_to_hub, private=args.private)
        except Preempted as p:
            print(f"{PROG}: {p}; continue with --resume", file=sys.stderr)
            return 128 + int(p.signum)
        return 0

    return run_command(PROG, command, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
