"""The main job: meta-train CTS on the bundled suite, then fine-tune it and scratch on unseen tasks.

    python -m ctinit_training.quickstart --out runs/quickstart
    python -m ctinit_training.quickstart --suite colour --out runs/qs-colour

1. meta-trains an initialization with CTS on the bundled meta-train tasks of the suite (glyphs:
   the bundled recipe `quickstart`; colour: `quickstart-colour`) and exports it to OUT/init/;
2. fine-tunes OUT/init and scratch:OUT/init (same architecture, fresh weights) on each meta-test task of the
   suite with the same steps, batch and seed;
3. prints a table and writes OUT/quickstart.json and OUT/quickstart.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ctinit.entrypoint import ArgumentParser, run_command
from ctinit.execution.cores import free_cores
from ctinit.finetune import FinetuneConfig, finetune
from ctinit.loading import load_init
from ctinit.tasks import SUITES, load_task

from . import launch
from .config import load_config
from .meta_train import check_out, run
from .preemption import Preempted

RECIPE = Path(__file__).parent / "recipes" / "quickstart.yaml"
# suite -> the recipe of its main job (its meta-test tasks come from ctinit.tasks.SUITES)
SUITE_RECIPES = {"glyphs": RECIPE, "colour": Path(__file__).parent / "recipes" / "quickstart-colour.yaml"}


def compare(inits: dict[str, str], task_specs: list[str], config: FinetuneConfig, image_size: int) -> dict:
    """Test accuracy of every initialization on every task: {task: {label: accuracy}}."""
    table = {}
    for spec in task_specs:
        task = load_task(spec, image_size=image_size, seed=config.seed)
        table[task.name] = {}
        for label, init in inits.items():
            result = finetune(load_init(init, seed=config.seed), task, config, device="cpu")
            table[task.name][label] = result.test_accuracy
            print(f"  {task.name:<10} {label:<8} test accuracy {result.test_accuracy:.4f} ({result.seconds:.0f} s)",
                  file=sys.stderr, flush=True)
    return table


def markdown(table: dict, labels: list[str]) -> str:
    lines = ["| task | " + " | ".join(labels) + " | ctinit - scratch |", "|---" * (len(labels) + 2) + "|"]
    for task, row in table.items():
        lines.append(f"| {task} | " + " | ".join(f"{row[l]:.3f}" for l in labels) + f" | {row['ctinit'] - row['scratch']:+.3f} |")
    means = {l: sum(r[l] for r in table.values()) / len(table) for l in labels}
    lines.append("| **mean** | " + " | ".join(f"**{means[l]:.3f}**" for l in labels) +
                 f" | **{means['ctinit'] - means['scratch']:+.3f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ctinit_training.quickstart", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--suite", choices=sorted(SUITE_RECIPES), default="glyphs",
                        help="the bundled suite: glyphs (28x28 grayscale, the default) or colour (32x32 RGB)")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--finetune-batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted quickstart in OUT")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart in OUT")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--cpu-processes", default="auto", metavar="auto|N",
                        help="meta-train on the CPU as N processes (auto: fitted to the free cores; see ctinit-train "
                             "--cpu-processes) (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="meta-training overrides, e.g. steps=500")
    args = parser.parse_args(argv)
    return run_command("quickstart", lambda: quickstart(args), debug=args.debug)


def meta_train(config, args) -> dict:
    """Meta-train as ``--cpu-processes`` says: several processes (forked, or through torch's launcher: see
    training/launch.py), or this one with the free cores' threads; fine-tuning then runs here, on the same threads
    after one process, else on as many as cores are free then."""
    import torch

    def train(split: str | None = None) -> dict:
        summary = run(config, args.out, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
        if split is not None:
            launch.record_split(config, summary["task_steps_per_s"], split, summary["steps_run"])
        return summary

    if config.device != "cpu" and torch.cuda.is_available() or launch.launched():
        return train()
    check_out(Path(args.out), args.resume, args.overwrite)  # said once, not by every process
    processes, threads, why = launch.choose_split(args.cpu_processes, config, args.out, args.resume)
    threads = threads or torch.get_num_threads()  # 0: torch's own count (one process, as before the option)
    print(f"quickstart: meta-training as {processes} process(es) x {threads} thread(s) ({why})", file=sys.stderr)
    if processes == 1:
        torch.set_num_threads(threads)
        return train(f"1x{threads}")
    started = time.perf_counter()
    split = f"{processes}x{threads}"
    argv = ["--config", str(SUITE_RECIPES[args.suite]), "--out", args.out,
            *(["--no-progress"] if args.no_progress else []), *(["--resume"] if args.resume else []),
            *(["--overwrite"] if args.overwrite else []), f"seed={args.seed}", *args.overrides]

    def rank() -> int:  # in each process
        try:
            train(split)
        except Preempted as p:
            return p.report("quickstart")
        return 0

    status = launch.run_processes(processes, threads, lambda: run_command("quickstart", rank, debug=args.debug), argv)
    if status != 0:
        raise SystemExit(status)  # the processes said what went wrong
    # fine-tuning, here in one process: threads that meet at every operator only on cores free now (not under load)
    torch.set_num_threads(free_cores())
    return {"init": str(Path(args.out) / "init"), "seconds": time.perf_counter() - started}


def quickstart(args) -> int:
    start = time.perf_counter()
    config = load_config(SUITE_RECIPES[args.suite], [f"seed={args.seed}", *args.overrides])
    ft = FinetuneConfig(steps=args.finetune_steps, batch_size=args.finetune_batch_size, seed=args.seed,
                        progress=not args.no_progress)  # checked before meta-training
    try:
        summary = meta_train(config, args)
    except Preempted as p:
        return p.report("quickstart")
    init = summary["init"]
    print(f"fine-tuning on the meta-test tasks ({args.finetune_steps} steps, batch {args.finetune_batch_size}):",
          file=sys.stderr)
    table = compare({"ctinit": init, "scratch": f"scratch:{init}"}, [f"builtin:{n}" for n in SUITES[args.suite][1]], ft,
                    config.image_size)
    md = markdown(table, ["ctinit", "scratch"])
    seconds = time.perf_counter() - start
    out = Path(args.out)
    means = {l: sum(r[l] for r in table.values()) / len(table) for l in ("ctinit", "scratch")}
    report = {"suite": args.suite, "init": init, "meta_train_seconds": summary["seconds"], "total_seconds": seconds,
              "finetune_steps": args.finetune_steps, "seed": args.seed, "per_task": table, "mean": means}
    (out / "quickstart.json").write_text(json.dumps(report, indent=2))
    (out / "quickstart.md").write_text(md + "\n")
    print(md)
    print(f"\nctinit ({config.algorithm}, {config.steps} meta-steps) vs scratch: mean test accuracy "
          f"{means['ctinit']:.3f} vs {means['scratch']:.3f}; total {seconds / 60:.1f} min. Initialization: {init}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
