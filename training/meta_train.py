"""Meta-train a shared initialization.

    python -m training.meta_train --config training/recipes/quickstart.yaml --out runs/qs [key=value ...]

Writes ``OUT/init/`` (config.json + model.safetensors: phi only), ``OUT/config.yaml`` (the resolved config),
``OUT/train.log`` (what was printed) and ``OUT/metrics.jsonl`` (one JSON object every ``log_every`` steps).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from ctinit.errors import CtinitError
from ctinit.loading import save_init
from ctinit.meta import TrajectoryEngine
from ctinit.models import TaskHead, build_backbone
from ctinit.tasks import BatchSampler, load_task

from .config import dump_config, load_config

log = logging.getLogger("ctinit.meta_train")


def setup_logging(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    root = logging.getLogger("ctinit")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(out / "train.log")):
        handler.setFormatter(fmt)
        root.addHandler(handler)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tasks(config: dict, device: torch.device) -> list:
    tasks = []
    for spec in config["tasks"]:
        task = load_task(spec, image_size=config["image_size"], seed=config["seed"])
        if config["max_train_per_class"]:
            task = task.subset_train(int(config["max_train_per_class"]), seed=config["seed"])
        tasks.append(task.to(device))
    return tasks


def run(config: dict, out: str | Path, progress: bool = True) -> dict:
    """Meta-train with ``config`` (see training/config.py) and export phi to ``out/init``. Returns a summary."""
    from tqdm.auto import tqdm

    out = Path(out)
    setup_logging(out)
    dump_config(config, out / "config.yaml")
    device = resolve_device(config["device"])
    torch.manual_seed(config["seed"])
    tasks = load_tasks(config, device)
    log.info("algorithm %s, backbone %s, %d tasks on %s: %s", config["algorithm"], config["backbone"], len(tasks), device,
             ", ".join(f"{t.name} ({t.num_classes} classes, {len(t.y_train)} train)" for t in tasks))

    backbone = build_backbone(config["backbone"], config["image_size"]).to(device)
    heads = [TaskHead(backbone.feature_dim, t.num_classes).to(device) for t in tasks]
    samplers = [BatchSampler(t.x_train, t.y_train, config["batch_size"], seed=config["seed"] * 1000 + i,
                             augment=config["augment"], hflip=t.hflip, channels=backbone.config.num_channels)
                for i, t in enumerate(tasks)]
    engine = TrajectoryEngine(
        backbone, heads, samplers, rule=config["algorithm"], reset_period=config["reset_period"],
        meta_interval=config["meta_interval"], shift=config["shift"], reset=config["reset"],
        reset_heads=config["reset_heads"], inner_optimizer=config["inner_optimizer"],
        meta_optimizer=config["meta_optimizer"], meta_exclude=config["meta_exclude"],
    )
    log.info("meta_interval %d, reset_period %d, shift %s, %d meta-learned parameters",
             engine.meta_interval, engine.reset_period, engine.shift, engine.layout.size)

    steps = config["steps"] if config["algorithm"] != "scratch" else 0
    phi_start = engine.phi.detach().clone()
    start = time.perf_counter()
    loss_sum = torch.zeros(len(tasks), device=device)
    count = 0
    with open(out / "metrics.jsonl", "w") as metrics:
        bar = tqdm(range(1, steps + 1), desc=f"meta-train {config['algorithm']}", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        for step in bar:
            result = engine.step()
            loss_sum += result.losses
            count += 1
            if step % config["log_every"] == 0 or step == steps:
                losses = (loss_sum / count).tolist()
                record = {
                    "step": step, "mean_loss": sum(losses) / len(losses),
                    "task_loss": dict(zip([t.name for t in tasks], losses)),
                    "phi_distance": (engine.phi.detach() - phi_start).norm().item(),
                    "last_delta_norm": result.delta.norm().item() if result.delta is not None else None,
                    "task_steps_per_s": step * len(tasks) / (time.perf_counter() - start),
                }
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                bar.set_postfix(loss=f"{record['mean_loss']:.3f}", dphi=f"{record['phi_distance']:.3f}")
                log.info("step %d/%d mean inner loss %.4f |phi - phi0| %.4f", step, steps, record["mean_loss"],
                         record["phi_distance"])
                loss_sum.zero_()
                count = 0
        bar.close()
    seconds = time.perf_counter() - start

    made_with = {
        "algorithm": config["algorithm"],
        "config": {k: v for k, v in config.items() if k != "tasks"},
        "tasks": [{"spec": t.spec, "name": t.name, "num_classes": t.num_classes, "train_size": len(t.y_train),
                   "test_size": len(t.y_test)} for t in tasks],
        "steps": steps,
        "seed": config["seed"],
    }
    init_dir = save_init(engine.phi_module, out / "init", made_with)
    summary = {"init": str(init_dir), "steps": steps, "seconds": seconds,
               "task_steps_per_s": steps * len(tasks) / seconds if seconds > 0 and steps else None}
    log.info("wrote %s (%d steps in %.1f s)", init_dir, steps, seconds)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.meta_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML recipe (see training/recipes/)")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. steps=200 meta_optimizer.lr=0.1")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        run(config, args.out, progress=not args.no_progress)
    except CtinitError as e:
        if args.debug:
            raise
        print(f"meta_train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
