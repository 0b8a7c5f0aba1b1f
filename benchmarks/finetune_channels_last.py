"""Fine-tuning on the CPU in the two input memory formats: how much faster channels-last makes
``ctinit.finetune``'s steps
(issue 21's fast path, applied to fine-tuning), and what ``channels_last: auto`` picks.

    OMP_NUM_THREADS=1 python benchmarks/finetune_channels_last.py --json     # the study's fine-tuning: one thread

For each backbone at the recipes' sizes (convnet4-32 at 28 px, ResNet-20 at 32 px), ``finetune`` runs on the bundled
Latin task with the study's recipe (batch 64, Adam 1e-3) in rounds: each round fine-tunes once contiguous and once
channels-last from the same weights and seed, in alternating order. A run's step time is its training-loop time
(``FinetuneResult.seconds``, the test-set evaluation excluded) over its steps; the speedup is paired per round and
reported as the median with a distribution-free 95% interval. Last, one ``auto`` run shows the choice this machine
makes (it measures, or takes the choice recorded on this machine before).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.throughput import CPU_MODE_BACKBONES, machine, quantiles  # noqa: E402


def finetune_seconds_per_step(arch: str, size: int, task, steps: int, batch_size: int, channels_last) -> tuple:
    from ctinit.finetune import finetune
    from ctinit.models import build_backbone

    torch.manual_seed(0)
    result = finetune(build_backbone(arch, size), task, steps=steps, batch_size=batch_size, progress=False,
                      device="cpu", channels_last=channels_last)
    return result.seconds / steps, result.channels_last


def main(argv=None) -> int:
    from ctinit.tasks import load_task

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=None, help="per run (default: 100 for ResNet-20, 200 for convnet4-32)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--backbones", default=",".join(a for a, _ in CPU_MODE_BACKBONES))
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)

    result = {"config": {"rounds": args.rounds, "batch_size": args.batch_size, "task": "builtin:latin",
                         "optimizer": "adam 1e-3"}, "machine": machine(torch.device("cpu")),
              "loadavg_1min_before": os.getloadavg()[0], "backbones": {}}
    for arch, size in CPU_MODE_BACKBONES:
        if arch not in args.backbones.split(","):
            continue
        steps = args.steps or (100 if arch == "resnet20" else 200)
        task = load_task("builtin:latin", image_size=size, seed=0)
        times = {False: [], True: []}
        for r in range(args.rounds):
            for channels_last in ((False, True) if r % 2 == 0 else (True, False)):
                times[channels_last].append(
                    finetune_seconds_per_step(arch, size, task, steps, args.batch_size, channels_last)[0])
            print(f"{arch} round {r + 1}/{args.rounds}: contiguous {times[False][-1] * 1e3:.1f} ms, "
                  f"channels-last {times[True][-1] * 1e3:.1f} ms a step", file=sys.stderr, flush=True)
        _, auto_choice = finetune_seconds_per_step(arch, size, task, steps, args.batch_size, "auto")
        result["backbones"][arch] = {
            "image_size": size, "steps_per_run": steps,
            "step_ms": {"contiguous": quantiles([t * 1e3 for t in times[False]]),
                        "channels_last": quantiles([t * 1e3 for t in times[True]])},
            "speedup_channels_last": quantiles([c / l for c, l in zip(times[False], times[True])]),
            "auto_chose_channels_last": auto_choice}
    result["loadavg_1min_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for arch, r in result["backbones"].items():
            s = r["speedup_channels_last"]
            print(f"{arch}: channels-last {s['median']:.2f}x ({s['ci95'][0]:.2f}-{s['ci95'][1]:.2f}) over contiguous; "
                  f"auto chose {'channels-last' if r['auto_chose_channels_last'] else 'contiguous'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
