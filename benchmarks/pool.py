"""Task pools: peak memory and task-steps/s of 8 active tasks drawn from a pool of 40+ against 8 fixed tasks.

    python benchmarks/pool.py [--data DIR] [--backbones convnet4-32,resnet20] [--steps 300] [--reset-period 50]
                              [--rounds 2] [--active 8] [--add SPEC,...] [--concurrent] [--json]

The pool: the 12 bundled tasks (``builtin:``: Fashion-MNIST and 11 Noto scripts) and the glyph scripts of
``scripts/make_new_task.py`` (``GLYPH_SCRIPTS``: gujarati, kannada, digits and 30 more Noto scripts), rendered into
``--data`` (default: a temporary folder) by that script (``scripts/build_builtin_suite.py``'s renderer; needs
Debian's fonts-noto-core). The fixed set: the 8 bundled meta-train tasks of training/recipes/quickstart.yaml.

Both run the quickstart recipe's settings (CTS, batch 32, inner SGD lr .05, meta SGD lr .1) for the same steps and
reset period K, one ``ctinit-train`` process each with one thread, interleaved (fixed, pool, fixed, pool, ...) for
``--rounds`` rounds per backbone. Reported per run: task-steps/s between the first and the last ``metrics.jsonl``
record (start-up and the first K steps excluded; the pool's draws, one every K steps, included) and the process's
peak RSS (``wait4``); per backbone the median of the per-round pool/fixed ratios. ``--concurrent`` runs the two
processes of a round at the same time instead of one after the other, so that a change of a shared machine's load
hits both alike. Side by side in one process (``side_by_side``, ``--side-by-side-rounds``): an engine over the fixed
tasks and one over the pool's slots, built as ctinit-train builds them on the same real tasks, stepped alternately
one step at a time for a reset period, then the pool's draw; the median of the per-round ratios. And because
processes on a loaded machine still see different conditions, the pool's own cost is also measured in one process (``swap_cost``):
engine steps and draws that swap every slot, alternately, on synthetic data; a draw's share of a reset period is
what a pool adds. ``--json`` prints one JSON object on stdout. A benchmark, not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ["fashion-mnist", "latin", "greek", "cyrillic", "armenian", "hebrew", "devanagari", "arabic",
           "georgian", "thai", "ethiopic", "bengali"]
FIXED = BUNDLED[:8]  # the quickstart recipe's meta-train tasks
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def render(data: Path) -> list[str]:
    """Render the tasks outside the bundled suite into ``data`` (kept if already there); returns npz specs."""
    data.mkdir(parents=True, exist_ok=True)
    specs = []
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_new_task import GLYPH_SCRIPTS

    for name in GLYPH_SCRIPTS:
        path = data / f"{name}.npz"
        if not path.exists():
            t0 = time.time()
            subprocess.run([sys.executable, str(ROOT / "scripts" / "make_new_task.py"), name, str(path)], check=True,
                           stdout=subprocess.DEVNULL)
            log(f"rendered {name} ({time.time() - t0:.0f} s)")
        specs.append(f"npz:{path}")
    return specs


def start(recipe: dict, work: Path, tag: str) -> subprocess.Popen:
    """One ctinit-train process (one thread), stderr to a file."""
    config = work / f"{tag}.yaml"
    config.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(work / f"{tag}.stderr", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "ctinit_training.meta_train", "--config", str(config),
                                 "--out", str(work / tag), "--no-progress", "--cpu-processes", "1"], env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr)


def finish(proc: subprocess.Popen, recipe: dict, work: Path, tag: str, t0: float) -> dict:
    """Wait for a run; its task-steps/s between the first and the last metrics record, its own peak RSS."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = work / tag
    err = (work / f"{tag}.stderr").read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{err[-3000:]}")
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    active = recipe.get("active_tasks") or len(recipe["tasks"])
    first, last = records[0], records[-1]
    seconds = [r["step"] * active / r["task_steps_per_s"] for r in (first, last)]  # loop time at each record
    return {"task_steps_per_s": (last["step"] - first["step"]) * active / (seconds[1] - seconds[0]),
            "peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - t0,
            "final_loss": last["mean_loss"], "draws": err.count(": draw ")}


def swap_cost(backbone: str, image_size: int, batch_size: int, active: int, pool_size: int, reset_period: int,
              rounds: int = 5) -> dict:
    """In this process (one thread), on synthetic data: the median time of one engine step with ``active`` slots and
    of one draw that swaps every slot (``TaskPool.rotate``), measured alternately; the draw's share of a reset
    period is the pool's own cost, free of the machine's load changes between processes."""
    import torch

    from ctinit.meta import TrajectoryEngine
    from ctinit.models import TaskHead, build_backbone
    from ctinit.tasks import BatchSampler
    from ctinit_training.pool import TaskPool

    torch.set_num_threads(1)
    classes = [10 + 3 * (i % 13) for i in range(pool_size)]
    samplers = {i: BatchSampler(torch.randint(0, 256, (2000, 1, image_size, image_size), dtype=torch.uint8),
                                torch.arange(2000) % classes[i], batch_size, seed=i) for i in range(pool_size)}
    torch.manual_seed(0)
    model = build_backbone(backbone, image_size)
    head = lambda i: TaskHead(model.feature_dim, classes[i])  # noqa: E731
    pool = TaskPool(range(pool_size), active, 0)
    pool.draw()
    engine = TrajectoryEngine(model, [head(i) for i in pool.slots], [samplers[i] for i in pool.slots], rule="cts",
                              reset_period=2, inner_optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    steps, draws, swaps = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        engine.step()
        engine.step()  # (a reset: every theta is back at phi)
        steps.append((time.perf_counter() - t0) / 2)
        t0 = time.perf_counter()
        swaps.append(len(pool.rotate(engine, head, samplers.get)))
        draws.append(time.perf_counter() - t0)
    step, draw = statistics.median(steps), statistics.median(draws)
    return {"step_s": step, "draw_s": draw, "swaps_per_draw": statistics.median(swaps),
            "draw_share_of_reset_period": draw / (reset_period * step + draw)}


def side_by_side(backbone: str, fixed_specs: list[str], pool_specs: list[str], image_size: int, batch_size: int,
                 active: int, reset_period: int, rounds: int) -> dict:
    """In one process (one thread), on the real tasks: an engine over the fixed tasks and an engine over ``active``
    slots of the pool, built as ctinit-train builds them, stepped alternately one step at a time (so that a load
    change hits both alike) for a reset period, then the pool's draw, ``rounds`` times; the per-round ratio of pool
    to fixed task-steps/s (the draw counted to the pool), median and range."""
    import torch

    from ctinit.meta import TrajectoryEngine
    from ctinit.models import build_backbone
    from ctinit.tasks import BatchSampler, load_task
    from ctinit_training.task_setup import make_head, task_seed
    from ctinit_training.pool import TaskPool

    torch.set_num_threads(1)
    inner = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005}

    def build(specs):
        tasks = [load_task(s, image_size=image_size) for s in specs]
        torch.manual_seed(0)
        model = build_backbone(backbone, image_size)
        samplers = {i: BatchSampler(t.x_train, t.y_train, batch_size, seed=task_seed(0, i), hflip=t.hflip)
                    for i, t in enumerate(tasks)}
        head = lambda i: make_head(model.feature_dim, tasks[i].num_classes, task_seed(0, i))  # noqa: E731
        return model, samplers, head

    model, samplers, head = build(fixed_specs)
    fixed = TrajectoryEngine(model, [head(i) for i in samplers], list(samplers.values()), rule="cts",
                             reset_period=reset_period, inner_optimizer=inner, meta_optimizer={"name": "sgd", "lr": 0.1})
    model, pool_samplers, pool_head = build(pool_specs)
    pool = TaskPool(range(len(pool_specs)), active, 0)
    pool.draw()
    pooled = TrajectoryEngine(model, [pool_head(i) for i in pool.slots], [pool_samplers[i] for i in pool.slots],
                              rule="cts", reset_period=reset_period, inner_optimizer=inner,
                              meta_optimizer={"name": "sgd", "lr": 0.1})
    ratios, times = [], {"fixed": [], "pool": []}
    for r in range(rounds):  # a round: one reset period of each, step by step alternately, then the pool's draw
        spent = {"fixed": 0.0, "pool": 0.0}
        for _ in range(reset_period):
            for name, engine in (("fixed", fixed), ("pool", pooled)):
                t0 = time.perf_counter()
                engine.step()
                spent[name] += time.perf_counter() - t0
        t0 = time.perf_counter()
        pool.rotate(pooled, pool_head, pool_samplers.get)
        spent["pool"] += time.perf_counter() - t0
        for name in spent:
            times[name].append(spent[name])
        ratios.append(spent["fixed"] / spent["pool"])  # pool task-steps/s over fixed (both `active` tasks)
        log(f"{backbone} side by side, round {r}: pool/fixed task-steps/s {ratios[-1]:.3f}")
    return {"ratio_pool_over_fixed": statistics.median(ratios), "ratios": ratios,
            "fixed_task_steps_per_s": active * reset_period / statistics.median(times["fixed"]),
            "pool_task_steps_per_s": active * reset_period / statistics.median(times["pool"]),
            "draws": pool.draws, "reset_period": reset_period}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder for the rendered tasks (kept); default: a temporary one")
    parser.add_argument("--backbones", default="convnet4-32")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reset-period", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--active", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--add", default="", help="more task specs for the pool, comma-separated (e.g. the colour "
                        "suite's builtin: tasks; every task is resized to --image-size, grayscale repeated to RGB)")
    parser.add_argument("--concurrent", action="store_true",
                        help="run the fixed and the pool process of a round at the same time (on a shared machine)")
    parser.add_argument("--side-by-side-rounds", type=int, default=6,
                        help="rounds of the in-process comparison on the real tasks (0: skip)")
    parser.add_argument("--processes", action=argparse.BooleanOptionalAction, default=True,
                        help="the ctinit-train process runs (peak RSS); --no-processes skips them")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ctinit-pool-") as tmp:
        data = args.data or Path(tmp) / "data"
        t0 = time.time()
        pool = [f"builtin:{n}" for n in BUNDLED] + render(data) + [s for s in args.add.split(",") if s]
        log(f"pool of {len(pool)} tasks ready ({time.time() - t0:.0f} s)")
        base = {"algorithm": "cts", "image_size": args.image_size, "steps": args.steps, "batch_size": args.batch_size,
                "reset_period": args.reset_period, "log_every": args.reset_period,
                "inner_optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005},
                "meta_optimizer": {"name": "sgd", "lr": 0.1}}
        results = {}
        for backbone in args.backbones.split(","):
            fixed = {**base, "backbone": backbone, "tasks": [f"builtin:{n}" for n in FIXED]}
            pooled = {**base, "backbone": backbone, "tasks": pool, "active_tasks": args.active}
            runs = {"fixed": [], "pool": []}
            for r in range(args.rounds if args.processes else 0):
                pair = (("fixed", fixed), ("pool", pooled))
                load = os.getloadavg()[0]
                if args.concurrent:  # both at once: a change of the machine's load hits both alike
                    t0 = time.perf_counter()
                    procs = [start(recipe, Path(tmp), f"{backbone}-{tag}-{r}") for tag, recipe in pair]
                    done = [finish(p, recipe, Path(tmp), f"{backbone}-{tag}-{r}", t0) for p, (tag, recipe) in zip(procs, pair)]
                else:
                    done = []
                    for tag, recipe in pair:
                        t0 = time.perf_counter()
                        done.append(finish(start(recipe, Path(tmp), f"{backbone}-{tag}-{r}"), recipe, Path(tmp),
                                           f"{backbone}-{tag}-{r}", t0))
                for (tag, _), m in zip(pair, done):
                    m["load_before"] = load
                    runs[tag].append(m)
                    log(f"{backbone} round {r} {tag}: {m['task_steps_per_s']:.1f} task-steps/s, peak RSS "
                        f"{m['peak_rss_mb']:.0f} MB, {m['draws']} draws, load {load:.1f}")
            ratios = [p["task_steps_per_s"] / f["task_steps_per_s"] for f, p in zip(runs["fixed"], runs["pool"])]
            together = side_by_side(backbone, fixed["tasks"], pool, args.image_size, args.batch_size, args.active,
                                    args.reset_period, args.side_by_side_rounds) if args.side_by_side_rounds else None
            cost = swap_cost(backbone, args.image_size, args.batch_size, args.active, len(pool), args.reset_period)
            log(f"{backbone} in-process: step {cost['step_s']:.3f} s, a draw swapping {cost['swaps_per_draw']} slots "
                f"{cost['draw_s']:.4f} s: {100 * cost['draw_share_of_reset_period']:.2f}% of a reset period")
            results[backbone] = {"draw_cost": cost, "side_by_side": together, "runs": runs}
            if ratios:
                results[backbone].update({
                    "throughput_ratio_pool_over_fixed": statistics.median(ratios), "ratios": ratios,
                    "peak_rss_mb": {k: statistics.median(m["peak_rss_mb"] for m in v) for k, v in runs.items()},
                    "task_steps_per_s": {k: statistics.median(m["task_steps_per_s"] for m in v) for k, v in runs.items()},
                })
    import torch

    report = {
        "pool_size": len(pool), "active_tasks": args.active, "fixed_tasks": FIXED,
        "pool": [s.split(":", 1)[1] if s.startswith("builtin:") else Path(s[4:]).stem for s in pool],
        "settings": {k: v for k, v in vars(args).items() if k != "data"} | {"threads_per_process": 1},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "results": results,
    }
    for backbone, r in results.items():
        if "ratios" in r:
            log(f"{backbone} processes: pool/fixed task-steps/s {r['throughput_ratio_pool_over_fixed']:.3f} (rounds "
                f"{', '.join(f'{x:.3f}' for x in r['ratios'])}); peak RSS fixed {r['peak_rss_mb']['fixed']:.0f} MB, "
                f"pool {r['peak_rss_mb']['pool']:.0f} MB")
        if r["side_by_side"]:
            log(f"{backbone} side by side in one process: pool/fixed task-steps/s {r['side_by_side']['ratio_pool_over_fixed']:.3f} "
                f"(rounds {', '.join(f'{x:.3f}' for x in r['side_by_side']['ratios'])})")
        log(f"{backbone}: a draw costs {100 * r['draw_cost']['draw_share_of_reset_period']:.2f}% of a reset period")
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
