"""Meta-train a shared initialization, on one process or many (Accelerate / torchrun; CPUs or GPUs).

    ctinit-train --config training/recipes/quickstart.yaml --out runs/qs [key=value ...]
    accelerate launch --num_processes 8 -m ctinit_training.meta_train --config ... --out ...
    torchrun --nproc_per_node 2 -m ctinit_training.meta_train --config ... --out ... [--resume]

Tasks are sharded over processes (contiguous blocks, uneven splits allowed); every task's head, data order and
augmentation are seeded by its global index, so the trained phi does not depend on the number of processes.
The meta-step is one all-reduce of a flat fp32 buffer the size of phi.

Writes ``OUT/init/`` (config.json + model.safetensors: phi only), ``OUT/config.yaml`` (the resolved config),
``OUT/train.log``, ``OUT/metrics.jsonl`` (one JSON object every ``log_every`` steps) and, with
``checkpoint_every`` or on SIGTERM/SIGINT, ``OUT/checkpoints/step-N/`` (see training/checkpoint.py).
"""
from __future__ import annotations

import argparse
import json
import dataclasses
import logging
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ctinit import __version__
from ctinit.errors import CheckpointError, ConfigError, CtinitError
from ctinit.loading import save_init
from ctinit.meta import RULES, TrajectoryEngine
from ctinit.models import TaskHead, build_backbone
from ctinit.tasks import BatchSampler, load_task, task_name

from . import checkpoint as ckpt
from .config import changed_keys, dump_config, load_config

log = logging.getLogger("ctinit.meta_train")


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
    labels = task.y_train.detach().cpu().numpy()
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size > 1:
            held.append(rng.choice(idx, size=min(idx.size - 1, max(1, round(fraction * idx.size))), replace=False))
    mask = np.zeros(labels.size, dtype=bool)
    if held:
        mask[np.concatenate(held)] = True
    keep, out = (torch.from_numpy(np.flatnonzero(m)).to(task.x_train.device) for m in (~mask, mask))
    part = lambda index: dataclasses.replace(task, x_train=task.x_train.index_select(0, index),
                                             y_train=task.y_train.index_select(0, index.to(task.y_train.device)))
    return part(keep), part(out)


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


def run(config: dict, out: str | Path, progress: bool = True, resume: bool = False) -> dict:
    """Meta-train with ``config`` (see training/config.py) and export phi to ``out/init``. Returns a summary."""
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

    # Resuming: check the newest complete checkpoint before any data is loaded.
    resume_from, start_step = None, 0
    if resume:
        resume_from = ckpt.latest(out)
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
    if is_main:
        dump_config(config, out / "config.yaml")

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
            tasks.append(task.to(device))
        validation = config["validation"]
        val_tasks = [load_task(spec, image_size=config["image_size"], seed=validation["seed"])
                     for spec in validation["tasks"]] if (is_main and validation["every"]) else []
    except CtinitError as e:
        error = e
    if comm.any(error is not None, device):
        raise error or ConfigError("another process could not load its tasks; see its error line")

    torch.manual_seed(config["seed"])
    backbone = build_backbone(config["backbone"], config["image_size"]).to(device)
    heads = [make_head(backbone.feature_dim, t.num_classes, task_seed(config["seed"], i)).to(device)
             for i, t in zip(mine, tasks)]
    samplers = [BatchSampler(t.x_train, t.y_train, config["batch_size"], seed=task_seed(config["seed"], i),
                             augment=config["augment"], hflip=t.hflip, channels=backbone.config.num_channels)
                for i, t in zip(mine, tasks)]
    # Unaugmented, with their own seeds (the training samplers' draws are the same with or without them).
    heldout_samplers = [BatchSampler(t.x_train, t.y_train, config["batch_size"], seed=task_seed(config["seed"], i) + 1,
                                     augment=False, hflip=t.hflip, channels=backbone.config.num_channels)
                        for i, t in zip(mine, heldout_tasks)]
    engine = TrajectoryEngine(
        backbone, heads, samplers, rule=config["algorithm"], reset_period=config["reset_period"],
        meta_interval=config["meta_interval"], shift=config["shift"], reset=config["reset"],
        reset_heads=config["reset_heads"], inner_optimizer=config["inner_optimizer"],
        meta_optimizer=config["meta_optimizer"], meta_exclude=config["meta_exclude"],
        all_reduce=comm.sum_ if world > 1 else None, num_tasks_total=len(config["tasks"]),
        autocast=autocast_factory(config["mixed_precision"], device),
        grad_scaling=config["mixed_precision"] == "fp16", execution=config["execution"],
        heldout_batches=heldout_samplers or None,
    )
    samplers_state = samplers + heldout_samplers  # what a checkpoint saves and a resume restores
    best = {"accuracy": -1.0, "step": None}
    if resume_from is not None:
        best = meta.get("best_validation", best)
        state = ckpt.read_state(resume_from / f"rank-{rank}")
        engine.load_state_dict(state["engine"])
        for sampler, s in zip(samplers_state, state["samplers"]):
            sampler.load_state_dict(s)
        ckpt.set_rng_state(state["rng"])
        log.info("resumed from %s (step %d)", resume_from, start_step)

    names = [task_name(spec) for spec in config["tasks"]]
    log.info("world size %d on %s, precision %s (phi and meta-updates fp32); task-to-process map: %s", world, device,
             config["mixed_precision"], "; ".join(f"process {r}: {', '.join(names[i] for i in s)}" for r, s in enumerate(shards)))
    log.info("algorithm %s, backbone %s, meta_interval %d, reset_period %d, shift %s, %d meta-learned parameters",
             config["algorithm"], config["backbone"], engine.meta_interval, engine.reset_period, engine.shift,
             engine.layout.size)
    if config["log_with"]:
        accelerator.init_trackers(config["project_name"], config={k: str(v) for k, v in config.items()})

    steps = config["steps"] if config["algorithm"] != "scratch" else 0
    metrics_path = out / "metrics.jsonl"
    if is_main:
        kept = []
        if resume_from is not None and metrics_path.is_file():  # drop records the checkpoint does not cover
            kept = [l for l in metrics_path.read_text().splitlines() if l and json.loads(l)["step"] <= start_step]
        metrics_path.write_text("".join(l + "\n" for l in kept))

    stop = {"signum": None}

    def on_signal(signum, frame):
        stop["signum"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    num_tasks = len(config["tasks"])
    sums = torch.zeros(3, num_tasks, device=device)  # loss, accuracy, skipped steps per global task
    mine_index = torch.tensor(mine, device=device)
    count, start, phi_start = 0, time.perf_counter(), engine.phi.detach().clone()
    try:
        bar = tqdm(range(start_step + 1, steps + 1), desc=f"meta-train {config['algorithm']}", disable=not (progress and is_main),
                   file=sys.stderr, dynamic_ncols=True, unit="step", initial=start_step, total=steps)
        for step in bar:
            set_meta_lr(engine, config, step)
            result = engine.step()
            sums[0, mine_index] += result.losses
            if result.accuracies is not None:
                sums[1, mine_index] += result.accuracies
            if result.skipped:
                sums[2, mine_index[result.skipped]] += 1
                for t in result.skipped:
                    log.warning("step %d: non-finite inner loss on task %s, step skipped (%d in a row)", step,
                                names[mine[t]], engine.nonfinite_streak[t])
                worst = max(engine.nonfinite_streak)
                if worst >= config["max_nonfinite_steps"]:
                    t = engine.nonfinite_streak.index(worst)
                    raise TrainingStopped(
                        f"task {names[mine[t]]} had a non-finite inner loss {worst} steps in a row (max_nonfinite_steps): "
                        "lower inner_optimizer.lr, use mixed_precision=bf16 instead of fp16, or check the task's data")
            count += 1
            if step % config["log_every"] == 0 or step == steps:
                comm.sum_(sums)
                loss, acc, _ = (sums / count).tolist()
                skipped = sums[2].tolist()
                elapsed = time.perf_counter() - start
                record = {
                    "step": step, "mean_loss": sum(loss) / num_tasks, "mean_accuracy": sum(acc) / num_tasks,
                    "task_loss": dict(zip(names, loss)), "task_accuracy": dict(zip(names, acc)),
                    "skipped_steps": dict(zip(names, skipped)),
                    "phi_distance": (engine.phi.detach() - phi_start).norm().item(),
                    "delta_phi_norm": result.delta.norm().item() if result.delta is not None else None,
                    "task_steps_per_s": (step - start_step) * num_tasks / elapsed,
                }
                if is_main:
                    with open(metrics_path, "a") as f:
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
                        save_init(engine.phi_module, out / "best", {"algorithm": config["algorithm"], "steps": step,
                                                                   "validation": {**validation, **best}})
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps({"step": step, "validation_accuracy": accuracy, "best": best}) + "\n")
                    log.info("step %d meta-validation accuracy %.4f%s", step, accuracy,
                             " (best so far: wrote OUT/best)" if improved else f" (best {best['accuracy']:.4f} at step {best['step']})")
                    if config["log_with"]:
                        accelerator.log({"validation_accuracy": accuracy}, step=step)
                comm.barrier()
            signalled = comm.any(stop["signum"] is not None, device)
            if (config["checkpoint_every"] and step % config["checkpoint_every"] == 0) or signalled:
                path = save_checkpoint(out, step, engine, samplers_state, config, shards, comm, rank, is_main, best)
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
        "skipped_steps": int(sum(engine.skipped_steps)),
    }
    if world == 1:
        for entry, t in zip(made_with["tasks"], tasks):
            entry.update(num_classes=t.num_classes, train_size=len(t.y_train), test_size=len(t.y_test))
    summary = {"init": str(out / "init"), "steps": steps, "seconds": seconds,
               "task_steps_per_s": (steps - start_step) * num_tasks / seconds if seconds > 0 and steps > start_step else None}
    if is_main:
        save_init(engine.phi_module, out / "init", made_with)
        log.info("wrote %s (steps %d-%d in %.1f s)", out / "init", start_step + 1, steps, seconds)
    comm.barrier()
    if config["log_with"]:
        accelerator.end_training()
    return summary


def meta_validate(phi_module, tasks, validation: dict) -> float:
    """Mean test accuracy of a copy of phi briefly fine-tuned on each meta-validation task."""
    import copy

    from ctinit.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(steps=validation["steps"], batch_size=validation["batch_size"],
                            optimizer={"name": "adam", "lr": validation["lr"]}, seed=validation["seed"], progress=False)
    device = next(phi_module.parameters()).device
    accuracies = [finetune(copy.deepcopy(phi_module), task, config, device=device).test_accuracy for task in tasks]
    return sum(accuracies) / len(accuracies)


def save_checkpoint(out, step, engine, samplers, config, shards, comm, rank, is_main, best=None) -> Path:
    tmp = ckpt.tmp_dir(out, step)
    if is_main:
        tmp.mkdir(parents=True, exist_ok=True)
    comm.barrier()
    ckpt.write_state({"engine": engine.state_dict(), "samplers": [s.state_dict() for s in samplers],
                      "rng": ckpt.rng_state()}, tmp / f"rank-{rank}")
    comm.barrier()
    final = ckpt.checkpoint_root(out) / f"step-{step}"
    if is_main:
        meta = {"step": step, "world_size": comm.world_size, "task_map": shards, "config": config,
                "library_version": __version__, "best_validation": best}
        final = ckpt.finalize(out, step, meta, config["keep_checkpoints"])
        log.info("checkpoint %s", final)
    comm.barrier()
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctinit-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML recipe (see training/recipes/)")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. steps=200 meta_optimizer.lr=0.1")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        run(config, args.out, progress=not args.no_progress, resume=args.resume)
    except Preempted as p:
        print(f"meta_train: {p}; continue with --resume", file=sys.stderr)
        return 128 + int(p.signum)
    except CtinitError as e:
        if args.debug:
            raise
        print(f"meta_train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
