"""The trainer end to end on the CPU: ``ctinit-train`` with its default settings against eager fp32 in one process,
side by side in one run (issue 32, item 4; ``throughput.py --cpu-modes --trainer`` calls this, or run it alone).

    python benchmarks/trainer_defaults.py --json                       # about 15 min on 2 idle cores
    python benchmarks/trainer_defaults.py --tiny --json                # a check of the script (a minute or two)

For each backbone (convnet4-32 at 28 px: the quickstart recipe; ResNet-20 at 32 px on the same 8 glyph tasks),
``ctinit-train`` runs the quickstart recipe for --steps steps in these setups, interleaved (every round runs each
once, the order rotating), --repeats rounds:

- ``eager_fp32_1_process``: one process on all the cores (``--cpu-processes 1``), ``compile: off``, ``channels_last: false``,
  ``mixed_precision: no`` (the engine before its measured CPU choices);
- ``defaults``: what a user gets: every option and key at its default (``--cpu-processes auto``; precision:
  ``ctinit.execution.DEFAULT_PRECISION``, ``auto`` since issue 32: bf16 where the CPU has it and it measures faster);
- ``defaults_fp32``: the same with ``mixed_precision: no`` (what the processes and measured layout give alone; the
  defaults before bf16 was shown equivalent).

Reported per setup: task-steps/s end to end (all steps over the wall time of the command: start-up, data loading,
the measured trials and compiling included) and steady (between the first and last metrics record), with each run's
precision and split; per backbone the paired ratios over eager fp32 one-process (median and range over rounds).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "training" / "recipes" / "quickstart.yaml"
BACKBONES = {"convnet4-32": ["backbone=convnet4-32", "image_size=28"], "resnet20": ["backbone=resnet20", "image_size=32"]}
EAGER = ["compile='off'", "channels_last=false", "mixed_precision=no", "device=cpu"]
SETUPS = {
    "eager_fp32_1_process": (["--cpu-processes", "1"], EAGER),
    "defaults": ([], ["device=cpu"]),
    "defaults_fp32": ([], ["device=cpu", "mixed_precision=no"]),
}


def say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def steady_rate(out: Path) -> float | None:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "task_steps_per_s" in r]
    if len(records) < 2:
        return None
    tasks = len(records[0]["task_loss"])
    elapsed = [r["step"] * tasks / r["task_steps_per_s"] for r in (records[0], records[-1])]
    return (records[-1]["step"] - records[0]["step"]) * tasks / (elapsed[1] - elapsed[0])


def run_once(setup: str, arch: str, steps: int, extra: list[str], tmp: Path, threads: int | None = None) -> dict:
    flags, overrides = SETUPS[setup]
    out = tmp / f"{arch}-{setup}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "ctinit_training.meta_train", "--config", str(RECIPE), "--out", str(out),
           "--no-progress", *flags, *BACKBONES[arch], f"steps={steps}", f"log_every={max(1, steps // 5)}",
           *overrides, *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)  # one process: torch's default, all the cores (--threads: that many)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    made = json.loads((out / "init" / "config.json").read_text())["ctinit"]
    tasks = len(made["tasks"])
    return {"seconds": seconds, "end_to_end": steps * tasks / seconds, "steady": steady_rate(out),
            "precision": made.get("precision"), "world_size": made.get("world_size"),
            "split": next((l.split(": ", 1)[1] for l in proc.stderr.splitlines() if "process(es) x" in l), None)}


def bench(args) -> dict:
    from ctinit.execution.compiled import cpu_model
    from ctinit.execution.precision import DEFAULT_PRECISION, bf16_hardware

    result = {"recipe": "training/recipes/quickstart.yaml", "steps": args.steps, "repeats": args.repeats,
              "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "bf16_hardware": bf16_hardware(),
              "default_precision": DEFAULT_PRECISION, "loadavg_before": os.getloadavg()[0], "backbones": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.backbones.split(","):
            runs = {s: [] for s in SETUPS}
            for r in range(args.repeats):
                names = list(SETUPS)
                for setup in names[r % len(names):] + names[:r % len(names)]:
                    runs[setup].append(run_once(setup, arch, args.steps, args.set, Path(tmp), args.threads))
                    say(f"trainer {arch} {setup}: {runs[setup][-1]['end_to_end']:.1f} task-steps/s end to end, "
                        f"precision {runs[setup][-1]['precision']}, {runs[setup][-1]['split'] or 'one process'}")
            base = runs["eager_fp32_1_process"]
            ratios = {}
            for setup, rs in runs.items():
                for kind in ("end_to_end", "steady"):
                    paired = [a[kind] / b[kind] for a, b in zip(rs, base) if a[kind] and b[kind]]
                    ratios.setdefault(setup, {})[kind] = {"median": statistics.median(paired), "min": min(paired),
                                                          "max": max(paired)} if paired else None
            result["backbones"][arch] = {"runs": runs, "speedup_over_eager_fp32_1_process": ratios}
            say(f"trainer {arch}: " + ", ".join(f"{s} {v['end_to_end']['median']:.2f}x" for s, v in ratios.items()))
    result["loadavg_after"] = os.getloadavg()[0]
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="convnet4-32,resnet20")
    p.add_argument("--steps", type=int, default=300, help="meta-training steps per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a trainer override for every run")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for every run (default: unset: one process uses all the cores)")
    p.add_argument("--tiny", action="store_true", help="a check of the script: 30 steps, 1 round, 8 examples per class")
    p.add_argument("--json", action="store_true")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.tiny:
        args.steps, args.repeats, args.set = 30, 1, [*args.set, "max_train_per_class=8", "batch_size=8"]
    result = bench(args)
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
