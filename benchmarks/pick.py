"""How long ``ctinit pick`` takes on a new task of 20 images per class, with its default steps and seeds.

    python benchmarks/pick.py [--task builtin:georgian] [--per-class 20] [--threads 2] [--inits zoo:A ...] [--json]
    python benchmarks/pick.py --quick        # a smoke run: 2 steps, 1 seed (not a measurement)

The task is a bundled meta-test task cut to ``--per-class`` training images per class (seeded) and written as an
npz, so that pick sees what a user's small dataset looks like: its validation split is carved from those images.
``ctinit pick --data npz:TASK --json`` then runs in a subprocess with ``--threads`` intra-op threads (the issue's
budget: <= 10 minutes on 2 cores with the zoo's entries), and the wall time, the ranking and the machine are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def small_task(spec: str, per_class: int, out: Path, seed: int = 0) -> Path:
    from ctinit.tasks import load_task

    task = load_task(spec, seed=seed).subset_train(per_class, seed=seed)
    channels_last = lambda x: x.permute(0, 2, 3, 1).numpy() if x.shape[1] == 3 else x[:, 0].numpy()
    np.savez(out, x_train=channels_last(task.x_train), y_train=task.y_train.numpy(),
             x_test=channels_last(task.x_test), y_test=task.y_test.numpy())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="builtin:georgian")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inits", nargs="+", default=None, help="default: every zoo entry (pick's default)")
    parser.add_argument("--top", type=int, default=None, help="pick's --top (default: pick's; 0: fine-tune all, the "
                                                               "single-stage pick before the first stage existed)")
    parser.add_argument("--quick", action="store_true", help="2 steps, 1 seed: checks the script, measures nothing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ctinit-pick-bench-") as tmp:
        data = small_task(args.task, args.per_class, Path(tmp) / "task.npz")
        command = [sys.executable, "-m", "ctinit.cli", "pick", "--data", f"npz:{data}", "--json", "--no-progress"]
        if args.inits:
            command += ["--inits", *args.inits]
        if args.quick:
            command += ["--steps", "2", "--seeds", "1"]
        if args.top is not None:
            command += ["--top", str(args.top)]
        cpu_before = os.times()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        cpu_after = os.times()
        cpu_seconds = (cpu_after.children_user - cpu_before.children_user
                       + cpu_after.children_system - cpu_before.children_system)
    if done.returncode != 0:
        print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}", file=sys.stderr)
        return done.returncode
    picked = json.loads(done.stdout)
    import torch

    report = {"task": f"{args.task}, {args.per_class} images per class", "threads": args.threads, "quick": args.quick,
              "wall_seconds": seconds, "cpu_seconds": cpu_seconds, "load_average": os.getloadavg(),
              "top": picked.get("top"), "first_stage_seconds": picked.get("first_stage_seconds"),
              "next_command": picked.get("next_command"),
              "fine_tuned": [r["init"] for r in picked["ranking"] if r["validation_accuracy"] is not None],
              "inits": [r["init"] for r in picked["ranking"]], "steps": picked["steps"],
              "seeds": picked["seeds"], "recommendation": picked["recommendation"],
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "command": "python benchmarks/pick.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"ctinit pick on {report['task']}: {len(report['fine_tuned'])} of {len(report['inits'])} fine-tuned "
              f"({', '.join(report['fine_tuned'])}), "
              f"{report['steps']} steps x {len(report['seeds'])} seeds in {seconds:.0f} s with {args.threads} threads "
              f"-> {report['recommendation']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
