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
# The steps, each in its own module: the run folder (rundir.RunDir), the processes' tasks (distributed, task_setup),
# the resume point (resume), the engine (engine_setup), the metrics log (metrics), meta-validation (validation),
# checkpoints (checkpoint), signals (preemption) and the export (export); train() below is the loop.
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch

from ctinit.entrypoint import run_command
from ctinit.errors import ConfigError
from ctinit.schema import to_dict
from ctinit.tasks import task_name

from . import launch
from .arguments import PROG, build_parser
from .checkpoint import Checkpointer, check_finite_phi
from .config import TrainConfig, dump_config, load_config
from .distributed import Collectives, shard_tasks
from .engine_setup import build_engine, make_pool, set_meta_lr
from .export import export_init, made_with, push_run
from .metrics import MetricsLog, active_names, keep_metrics_until
from .preemption import Preempted, StopSignals
from .resume import find_resume_point, restore
from .rundir import RunDir
from .task_setup import load_tasks
from .validation import Validator

log = logging.getLogger("ctinit.meta_train")


def setup_logging(run: RunDir, is_main: bool) -> None:
    root = logging.getLogger("ctinit")
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if is_main:
        handlers.append(logging.FileHandler(run.log_path))
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)


def run(config: TrainConfig, out: str | Path, progress: bool = True, resume: bool = False,
        overwrite: bool = False) -> dict:
    """Meta-train with ``config`` (see training/config.py) and export phi to ``out/init``. Returns a summary.

    OUT belongs to this run while it trains (``OUT/.lock``, see training/rundir.py). A folder holding another run is
    refused unless ``resume`` (the same config; only this run's checkpoints are used) or ``overwrite`` (the other
    run's outputs are deleted first)."""
    out = Path(out)
    check_out(out, resume, overwrite)
    is_main = int(os.environ.get("RANK", "0")) == 0  # before Accelerate starts: what torchrun/accelerate set
    run_dir = RunDir(out)
    lock = run_dir.lock(PROG)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        if is_main:
            run_dir.prepare(config, resume, overwrite, PROG)
        try:
            return train(config, run_dir, progress, resume)
        except BaseException:
            if is_main:
                run_dir.undo_failed_start()  # before the first step: nothing lost, nothing left that blocks a rerun
            raise
    finally:
        lock.release()


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """What is wrong with --out and its flags before anything starts (also before --cpu-processes starts processes,
    so that the error is said once)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder; pass a new folder or a run folder to --resume")
    if resume and overwrite:
        raise ConfigError("--resume continues the run in OUT and --overwrite deletes it: pass one of them")


def log_setup(config: TrainConfig, engine, world: int, device, shards, names: list[str], pool, comm,
              start_step: int) -> None:
    log.info("world size %d on %s, precision %s (mixed_precision %s; phi and meta-updates fp32); task-to-process map: "
             "%s", world, device, engine.precision, config.mixed_precision,
             "; ".join(f"process {r}: {', '.join(names[i] for i in s)}" for r, s in enumerate(shards)))
    log.info("algorithm %s, backbone %s, meta_interval %d, reset_period %d, shift %s, %d meta-learned parameters",
             config.algorithm, config.backbone, engine.meta_interval, engine.reset_period, engine.shift,
             engine.layout.size)
    if pool is not None:
        log.info("task pool: %d tasks, %d active (%d per process, each from its block), a new draw every %d steps",
                 len(config.tasks), config.active_tasks, pool.active, engine.reset_period)
        log.info("step %d: draw %d: active tasks %s", start_step, pool.draws, ", ".join(active_names(pool, names, comm, device)))


def train(config: TrainConfig, run: RunDir, progress: bool, resume: bool) -> dict:
    """The training loop, on every process: set up, train ``steps`` global steps, export."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    accelerator = Accelerator(cpu=config.device == "cpu" or not torch.cuda.is_available(),
                              log_with=config.log_with, project_dir=str(run.path))
    rank, world, is_main, device = (accelerator.process_index, accelerator.num_processes,
                                    accelerator.is_main_process, accelerator.device)
    comm = Collectives(world)
    if is_main:
        run.path.mkdir(parents=True, exist_ok=True)
    comm.barrier()
    setup_logging(run, is_main)
    run.open()
    shards = shard_tasks(len(config.tasks), world)
    names = [task_name(spec) for spec in config.tasks]
    pool = make_pool(config, shards[rank], world)
    point = find_resume_point(run, config, world) if resume else None  # checked before any data is loaded
    tasks = load_tasks(config, shards[rank], device, is_main, comm, pooled=pool is not None)
    if is_main:
        dump_config(config, run.config_path)
    rank_state = point.rank_state(rank, tasks.by_index(), names) if point is not None else None
    trainee = build_engine(config, tasks, pool, rank_state, comm, device)
    engine, start_step = trainee.engine, point.step if point is not None else 0
    phi_start = engine.phi.detach().clone()  # the run's start (phi_distance), rebuilt from the seed on --resume
    if point is not None:
        restore(point, rank_state, engine, trainee.samplers)
    log_setup(config, engine, world, device, shards, names, pool, comm, start_step)
    if config.log_with:
        accelerator.init_trackers(config.project_name, config={k: str(v) for k, v in to_dict(config).items()})
    steps = config.steps if config.algorithm != "scratch" else 0
    if is_main:
        keep_metrics_until(run, start_step, resumed=point is not None)
    checkpointer = Checkpointer(run, trainee, config, shards, comm, rank, is_main)
    validator = Validator(config, tasks.validation, run, point.best if point is not None else
                          {"accuracy": -1.0, "step": None}, is_main, comm, accelerator)

    run.started = True  # everything is checked and loaded: from here on a failure keeps the run's files
    with StopSignals() as signals:
        metrics = MetricsLog(config, names, trainee.slots, device, start_step)
        bar = tqdm(range(start_step + 1, steps + 1), desc=f"meta-train {config.algorithm}", disable=not (progress and is_main),
                   file=sys.stderr, dynamic_ncols=True, unit="step", initial=start_step, total=steps)
        for step in bar:
            set_meta_lr(engine, config, step)
            result = engine.step()
            metrics.add(result, engine)
            if pool is not None and result.reset:  # the engine's own K (ctinit.meta.schedule), never a copy of it
                metrics.check_nonfinite(engine, step)  # the outgoing tasks' skip runs, before they leave their slots
                trainee.rotate()  # the engine has just reset (theta == phi): the next draw takes the slots
                metrics.set_slots(trainee.slots)
                log.info("step %d: draw %d: active tasks %s", step, pool.draws, ", ".join(active_names(pool, names, comm, device)))
            read_back = step % config.log_every == 0 or step == steps
            if read_back:
                record = metrics.read_back(step, result, engine, phi_start, comm)
                if not metrics.finite(record):
                    check_finite_phi(engine, run, step)
                if is_main:
                    metrics.report(record, run, bar, steps)
                metrics.track(record, accelerator)
            if validator.due(step):
                validator(engine, step)
            checkpoint_due = bool(config.checkpoint_every) and step % config.checkpoint_every == 0
            # On several processes the stop flag is agreed on (an all-reduce and a host read) at read-back and
            # checkpoint points only; one process checks it every step at no cost.
            signalled = comm.any(signals.signum is not None, device) if (world == 1 or read_back or checkpoint_due) else False
            if checkpoint_due or signalled:
                path = checkpointer(step, validator.best)
                if signalled:
                    raise signals.stop(path)
        bar.close()
    seconds = time.perf_counter() - metrics.started

    skipped = int(sum(engine.skipped_steps)) + (pool.skipped_steps() if pool is not None else 0)
    # the precision the steps ran in (mixed_precision auto: what this run measured and chose, or its checkpoint's)
    record = {**made_with(config, names, steps, world, skipped, tasks.train), "precision": engine.precision}
    record["phi_distance"] = (engine.phi.detach() - phi_start).norm().item()  # 0: never meta-updated (export refuses)
    export_init(run, engine, record, steps=steps, start_step=start_step, checkpoint_every=config.checkpoint_every,
                checkpointer=checkpointer, best=validator.best)
    if is_main:
        run.completed()
        log.info("wrote %s (steps %d-%d in %.1f s, precision %s)", run.path / "init", start_step + 1, steps, seconds,
                 engine.precision)
    comm.barrier()
    if config.log_with:
        accelerator.end_training()
    tasks_per_step = config.active_tasks or len(config.tasks)
    return {"init": str(run.path / "init"), "steps": steps, "steps_run": steps - start_step, "seconds": seconds,
            "precision": engine.precision,
            "task_steps_per_s": (steps - start_step) * tasks_per_step / seconds if seconds > 0 and steps > start_step else None}


def main(argv: list[str] | None = None) -> int:
    return execute(build_parser().parse_args(argv), argv)


def execute(args, argv: list[str] | None = None) -> int:
    """Run ``ctinit-train`` with parsed arguments (:func:`ctinit_training.arguments.build_parser`); ``argv`` (default
    ``sys.argv[1:]``) is what ``--cpu-processes`` relaunches through torch's launcher."""

    def train_and_push(config: TrainConfig, split: str | None) -> int:
        try:
            summary = run(config, args.out, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
            launch.record_split(config, summary["task_steps_per_s"], split, summary["steps_run"])
            if args.push_to_hub:
                push_run(args.out, args.push_to_hub, PROG, private=args.private)
        except Preempted as p:
            return p.report(PROG)
        return 0

    def command() -> int:
        config = load_config(args.config, args.overrides)
        split = os.environ.get(launch.SPLIT_ENV)  # set in the processes --cpu-processes launched
        if args.push_to_hub:
            from ctinit.hubio import check_push

            check_push(args.push_to_hub)  # a bad repo id, no token or offline fails before training, not after
        if args.cpu_processes and not launch.launched() and (config.device == "cpu" or not torch.cuda.is_available()):
            check_out(Path(args.out), args.resume, args.overwrite)
            processes, threads, why = launch.choose_split(args.cpu_processes, config, args.out, args.resume)
            if processes > 1:  # each process trains its tasks and, the main one, pushes if asked
                print(f"{PROG}: {processes} process(es) x {threads} thread(s) ({why})", file=sys.stderr, flush=True)
                return launch.run_processes(
                    processes, threads,
                    lambda: run_command(PROG, lambda: train_and_push(config, f"{processes}x{threads}"), debug=args.debug),
                    launch.without_flag(sys.argv[1:] if argv is None else argv))
            if threads:
                torch.set_num_threads(threads)
            split = f"1x{torch.get_num_threads()}"
        return train_and_push(config, split)

    return run_command(PROG, command, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
