"""The quickstart under contention (issue 32, item 5): its wall time with the defaults on an idle machine against
beside two busy-looping competitors, and a one-process one-thread run beside the same competitors.

    python benchmarks/contention.py --json                 # about 15-20 min on 2 idle cores
    python benchmarks/contention.py --tiny --json          # a check of the script (a few minutes)

Setups, in this order per round (--repeats rounds):

- ``idle``: ``python -m ctinit_training.quickstart`` with its defaults (``--cpu-processes auto``: the split fitted to
  the cores free now, ``ctinit.execution.cores``) on the machine as it is;
- ``loaded``: the same, with two competitors started first (``python -c 'while True: pass'``, one per core of a
  2-core machine: --competitors), given --settle seconds to start;
- ``loaded_1_thread``: ``--cpu-processes 1`` with ``OMP_NUM_THREADS=1`` beside the same competitors (the reference
  the defaults should not fall far below).

The target: ``loaded`` takes at most 3x ``idle`` (``ratio_loaded_over_idle``), and is not far slower than
``loaded_1_thread``. Each quickstart gets a fresh folder and torch's compile cache and the per-machine records stay as
they are (a user's second run). The split each run chose is reported from its stderr.
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
BUSY = "while True: pass"


def say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def choices(out: Path) -> dict:
    """The measured choices the run logged (``precision: bf16 (auto: ...)``, ``channels_last``, ``compile``)."""
    found = {}
    for line in (out / "train.log").read_text().splitlines():
        words = line.split(" ", 1)[-1]
        for name in ("precision", "channels_last", "compile"):
            if words.startswith(name + ": ") and not words.startswith("precision: auto: measuring"):
                found.setdefault(name, words.split(": ", 1)[1])
    return found


def quickstart(out: Path, extra: list[str], env: dict) -> dict:
    cmd = [sys.executable, "-m", "ctinit_training.quickstart", "--out", str(out), "--no-progress", *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    report = json.loads((out / "quickstart.json").read_text())
    split = next((l.split("meta-training as ", 1)[1] for l in proc.stderr.splitlines() if "meta-training as" in l), None)
    return {"seconds": seconds, "meta_train_seconds": report["meta_train_seconds"], "split": split,
            "choices": choices(out), "loadavg_at_start": None, "mean_ctinit": report["mean"]["ctinit"]}


def with_competitors(n: int, settle: float, body):
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
    try:
        time.sleep(settle)
        return body()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def bench(args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    extra = ["--finetune-steps", str(args.finetune_steps), *args.set]
    runs = {"idle": [], "loaded": [], "loaded_1_thread": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            load = os.getloadavg()[0]
            runs["idle"].append({**quickstart(Path(tmp) / f"idle-{r}", extra, env), "loadavg_at_start": load})
            say(f"contention round {r}: idle {runs['idle'][-1]['seconds']:.0f} s ({runs['idle'][-1]['split']})")
            for name, more, more_env in (("loaded", [], {}),
                                         ("loaded_1_thread", ["--cpu-processes", "1"], {"OMP_NUM_THREADS": "1"})):
                def body():
                    load = os.getloadavg()[0]
                    return {**quickstart(Path(tmp) / f"{name}-{r}", more + extra, {**env, **more_env}),
                            "loadavg_at_start": load}
                runs[name].append(with_competitors(args.competitors, args.settle, body))
                say(f"contention round {r}: {name} {runs[name][-1]['seconds']:.0f} s ({runs[name][-1]['split']})")
            time.sleep(args.settle if r + 1 < args.repeats else 0)  # the competitors gone before the next idle run
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    return {"cores": len(os.sched_getaffinity(0)), "competitors": args.competitors, "repeats": args.repeats,
            "quickstart_args": extra, "median_seconds": med, "ratio_loaded_over_idle": med["loaded"] / med["idle"],
            "ratio_loaded_over_loaded_1_thread": med["loaded"] / med["loaded_1_thread"],
            "target_loaded_at_most_3x_idle": med["loaded"] <= 3 * med["idle"], "runs": runs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--competitors", type=int, default=2)
    p.add_argument("--settle", type=float, default=5.0, help="seconds between starting competitors and the run")
    p.add_argument("--finetune-steps", type=int, default=300, help="the quickstart's default")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a meta-training override")
    p.add_argument("--tiny", action="store_true", help="a check of the script: 20 meta-steps, 5 fine-tuning steps")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.finetune_steps, args.settle = 5, 2.0
        args.set = [*args.set, "steps=20", "max_train_per_class=8", "batch_size=8"]
    result = bench(args)
    say(f"quickstart: idle {result['median_seconds']['idle']:.0f} s, beside {args.competitors} busy loops "
        f"{result['median_seconds']['loaded']:.0f} s ({result['ratio_loaded_over_idle']:.2f}x; target <= 3x), "
        f"one thread beside them {result['median_seconds']['loaded_1_thread']:.0f} s")
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
