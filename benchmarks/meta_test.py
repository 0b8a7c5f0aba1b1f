"""The reproduction study: CTS against Reptile, first-order MAML, Leap, multi-task learning and scratch, on the
bundled suite, on equal budgets, with error bars.

    python benchmarks/meta_test.py [--quick] [--json] [--out DIR]

What one run does (every number below is a preset value; ``--quick`` shrinks steps and seeds, keeps every stage):

1. **search**: every algorithm gets the same search procedure, three meta learning rates (its centre value times
   1/sqrt(10), 1, sqrt(10)), extended by one more point beyond an end of the grid that wins, at most twice; each
   rate is meta-trained on 6 of the 8 meta-train tasks for ``search_steps`` and scored by the test accuracy of a
   short fine-tuning on the 2 held-out meta-train tasks (never on a meta-test task). The best rate wins; ties go to
   the centre.
2. **meta-training**: every algorithm with its selected rate on all 8 meta-train tasks, same backbone, batch,
   inner optimizer, reset period K and number of steps, so every algorithm spends the same number of inner
   task-steps (steps x 8). The runs of CTS and Reptile also record held-out accuracy along the way (the pipeline's
   meta-validation hook, fine-tuning phi on the meta-test tasks every ``snapshot_every`` steps).
3. **fine-tuning**: every result and scratch on every meta-test task for every seed, with all training data and with
   ``limited_per_class`` examples per class (a different seeded subset per seed); test accuracy, mean +- std over
   seeds of the task average.
4. **K sweep**: CTS and Reptile at K/10, K and 10K (the same steps and selected rates), fine-tuned on the full data.
5. figures (``accuracy.png``, ``convergence.png``, ``k_sweep.png``), ``results.json`` and ``results.md`` in OUT.

Meta-training runs are kept in ``OUT/runs/NAME`` and reused when their config is unchanged, so an interrupted
study picks up where it stopped. ``--json`` prints one object on stdout (``algorithms``, ``convergence``,
``k_sweep``, ``config``, ...); progress goes to stderr.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALGORITHMS = ("cts", "reptile", "fomaml-cts", "fomaml", "leap", "mtl")
#: Centre of each algorithm's meta learning-rate grid (SGD). Scales differ by what the direction is: CTS moves phi
#: towards the trajectories every step (0.1 is the quickstart's value); Reptile, FOMAML and Leap update once per K
#: steps (Reptile's outer step size is 1 in Nichol et al.); FOMAML-CTS and MTL step along a mean gradient every step.
LR_CENTRE = {"cts": 0.1, "reptile": 1.0, "fomaml-cts": 0.1, "fomaml": 1.0, "leap": 1.0, "mtl": 0.1}
LR_FACTORS = (10 ** -0.5, 1.0, 10 ** 0.5)
#: When the best rate is at an end of the grid, the grid grows by one more point beyond it (same factor), at most
#: this many times: the same rule for every algorithm, so that no algorithm is held to a badly centred grid.
MAX_EXTENSIONS = 2

#: The shared setup of every meta-training run (the quickstart recipe's backbone, batch and inner optimizer).
BASE = {
    "backbone": "convnet4-32", "image_size": 28, "batch_size": 32,
    "inner_optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "meta_optimizer": {"name": "sgd", "lr": 0.1}, "reset": "soft", "augment": True, "log_every": 50,
}

PRESETS = {
    "full": {
        "steps": 1000, "reset_period": 100, "search_steps": 400, "search_finetune_steps": 150,
        "finetune_steps": 200, "finetune_batch_size": 64, "limited_per_class": 20, "limited_finetune_steps": 100,
        "seeds": [0, 1, 2], "snapshot_every": 100, "snapshot_finetune_steps": 100, "k_sweep_seeds": [0, 1, 2],
    },
    "quick": {
        "steps": 240, "reset_period": 24, "search_steps": 60, "search_finetune_steps": 40,
        "finetune_steps": 60, "finetune_batch_size": 64, "limited_per_class": 20, "limited_finetune_steps": 40,
        "seeds": [0, 1], "snapshot_every": 48, "snapshot_finetune_steps": 40, "k_sweep_seeds": [0],
    },
}


def say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def builtin(names) -> list[str]:
    return [f"builtin:{n}" for n in names]


# ----------------------------------------------------------------------------------------- meta-training
def meta_train(out: Path, name: str, algorithm: str, lr: float, tasks: list[str], steps: int, reset_period: int,
               validation: dict | None = None) -> dict:
    """One meta-training run with the shared setup; reused if OUT/runs/NAME holds a finished run of this config."""
    from ctinit_training.config import DEFAULTS, validate
    from ctinit_training.meta_train import run

    config = copy.deepcopy(DEFAULTS)
    config.update(copy.deepcopy(BASE))
    config.update(algorithm=algorithm, tasks=list(tasks), steps=steps, reset_period=reset_period, seed=0)
    config["meta_optimizer"]["lr"] = lr
    if validation:
        config["validation"].update(validation)
    validate(config)
    run_dir = out / "runs" / name
    record = run_dir / "study.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if saved["config"] == config and (run_dir / "init" / "model.safetensors").is_file():
            say(f"  {name}: reusing {run_dir}")
            return saved
    say(f"  {name}: meta-training {algorithm}, meta lr {lr:g}, {len(tasks)} tasks x {steps} steps, K {reset_period}")
    summary = run(config, run_dir, progress=False, overwrite=True)  # a stale or partial run of another config
    curve = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if "validation_accuracy" in entry:
                curve.append([entry["step"], entry["validation_accuracy"]])
    saved = {"config": config, "init": summary["init"], "seconds": summary["seconds"], "validation_curve": curve}
    record.write_text(json.dumps(saved, indent=1))
    say(f"  {name}: {summary['seconds']:.0f} s")
    return saved


def search_meta_lr(out: Path, algorithm: str, train: list[str], val: list[str], preset: dict, K: int) -> dict:
    """The meta learning-rate search of one algorithm: the three-point grid around its centre, extended beyond an
    end that wins (``MAX_EXTENSIONS``); each rate meta-trained on ``train`` and scored by fine-tuning on ``val``."""
    factor = LR_FACTORS[-1]
    scores: dict[float, float] = {}

    def score(lrs):
        inits = {}
        for lr in lrs:
            run = meta_train(out, f"search-{algorithm}-lr{lr:.4g}", algorithm, lr, train, preset["search_steps"],
                             min(K, preset["search_steps"]))
            inits[f"{lr:.6g}"] = run["init"]
        result = finetune_grid(inits, val, [0], preset["search_finetune_steps"], preset["finetune_batch_size"])
        for lr in lrs:
            scores[lr] = result[f"{lr:.6g}"]["mean"]["mean"]

    def best():  # ties go to the centre, then to the smaller rate
        return max(scores, key=lambda lr: (scores[lr], lr == LR_CENTRE[algorithm], -lr))

    score([LR_CENTRE[algorithm] * f for f in LR_FACTORS])
    extensions = 0
    while extensions < MAX_EXTENSIONS and best() in (min(scores), max(scores)):
        score([min(scores) / factor] if best() == min(scores) else [max(scores) * factor])
        extensions += 1
    selected = best()
    return {"scores": sorted(scores.items()), "selected": selected, "extensions": extensions,
            "at_edge": selected in (min(scores), max(scores))}


def finetune_grid(inits: dict[str, str], tasks: list[str], seeds: list[int], steps: int, batch_size: int,
                  per_class: int | None = None) -> dict:
    """Test accuracy of every init on every task and seed: ``{label: {"mean": stats, "tasks": {task: stats}}}``."""
    from ctinit.evaluate import run_evaluation
    from ctinit.finetune import FinetuneConfig

    config = FinetuneConfig(steps=steps, batch_size=batch_size, eval_every=steps, progress=False)
    results = run_evaluation(list(inits.values()), tasks, seeds=seeds, config=config, max_train_per_class=per_class,
                             progress=False)  # device: Accelerate's choice (CUDA when there is one)
    by_path = {v: k for k, v in inits.items()}
    out = {}
    for path, stats in results["summary"].items():
        label = by_path[path]
        out[label] = {"mean": stats["mean"], "tasks": {spec.split(":", 1)[-1]: s for spec, s in stats["tasks"].items()}}
    return out


def initial_accuracy(tasks: list[str], steps: int) -> float:
    """Held-out accuracy of the meta-training runs' starting point (step 0 of the convergence curves)."""
    import torch

    from ctinit.models import build_backbone
    from ctinit.tasks import load_task
    from ctinit_training.meta_train import meta_validate

    torch.manual_seed(0)  # what training.meta_train.run does before it builds the backbone (seed 0)
    backbone = build_backbone(BASE["backbone"], BASE["image_size"])
    loaded = [load_task(spec, image_size=BASE["image_size"], seed=0) for spec in tasks]
    return meta_validate(backbone, loaded, {"steps": steps, "batch_size": 64, "lr": 1e-3, "seed": 0})


def steps_to_reach(curve: list[list[float]], target: float) -> int | None:
    """The first step of ``curve`` ([[step, accuracy], ...]) whose accuracy is at least ``target``."""
    return next((int(s) for s, a in curve if a >= target), None)


# ----------------------------------------------------------------------------------------- figures
def _axes(size):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _save(fig, ax, path: Path, title: str, xlabel: str | None, ylabel: str) -> None:
    import matplotlib.pyplot as plt

    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(algorithms: dict, path: Path) -> None:
    names = list(algorithms)
    fig, ax = _axes((8, 4))
    width = 0.38
    for i, (setting, label) in enumerate((("full", "all training data"), ("limited", "limited data"))):
        means = [algorithms[n][setting]["mean"] for n in names]
        stds = [algorithms[n][setting]["std"] for n in names]
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=label, color=("tab:blue", "tab:orange")[i])
    ax.set_xticks(range(len(names)), names)
    low = min(algorithms[n][s]["mean"] - algorithms[n][s]["std"] for n in names for s in ("full", "limited"))
    ax.set_ylim(max(0.0, low - 0.05), None)
    _save(fig, ax, path, "Fine-tuned from each initialization (mean +- std over seeds)", None,
          "mean test accuracy, meta-test tasks")


def plot_convergence(convergence: dict, path: Path) -> None:
    fig, ax = _axes((7, 4))
    for name, color in (("cts", "tab:blue"), ("reptile", "tab:red")):
        curve = convergence["curves"][name]
        ax.plot([s for s, _ in curve], [a for _, a in curve], "o-", color=color, label=name)
    ax.axhline(convergence["reptile_final"], color="tab:red", ls=":", lw=1, label="Reptile's final")
    if convergence["cts_steps_to_reptile_final"] is not None:
        ax.axvline(convergence["cts_steps_to_reptile_final"], color="tab:blue", ls=":", lw=1,
                   label=f"CTS reaches it: step {convergence['cts_steps_to_reptile_final']}")
    _save(fig, ax, path, "Meta-level convergence on the meta-test tasks", "meta-training step",
          "held-out accuracy (short fine-tuning)")


def plot_k_sweep(k_sweep: dict, path: Path) -> None:
    fig, ax = _axes((6, 4))
    for name, color in (("cts", "tab:blue"), ("reptile", "tab:red")):
        ks = sorted(int(k) for k in k_sweep[name])
        ax.errorbar(ks, [k_sweep[name][str(k)]["mean"] for k in ks], yerr=[k_sweep[name][str(k)]["std"] for k in ks],
                    fmt="o-", capsize=3, color=color, label=name)
    ax.set_xscale("log")
    _save(fig, ax, path, "K sweep (same steps, same meta learning rate)", "trajectory length K (reset period)",
          "mean test accuracy, meta-test tasks")


# ----------------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    algos, cfg = result["algorithms"], result["config"]
    tasks = list(next(iter(algos.values()))["per_task"])
    lines = [f"Meta-test accuracy, all training data ({cfg['finetune_steps']} fine-tuning steps, batch "
             f"{cfg['finetune_batch_size']}, seeds {cfg['seeds']}), mean +- std over seeds:", "",
             "| algorithm | meta lr | " + " | ".join(tasks) + " | **mean** | limited data (" +
             f"{cfg['limited_per_class']}/class) |", "|---" * (len(tasks) + 4) + "|"]
    order = sorted(algos, key=lambda n: -algos[n]["mean_accuracy"])
    for name in order:
        a = algos[name]
        lr = f"{a['meta_lr']:.3g}" if a.get("meta_lr") is not None else "-"
        cells = " | ".join(f"{a['per_task'][t]['mean']:.3f} +- {a['per_task'][t]['std']:.3f}" for t in tasks)
        lines.append(f"| {name} | {lr} | {cells} | **{a['mean_accuracy']:.3f} +- {a['std']:.3f}** | "
                     f"{a['limited']['mean']:.3f} +- {a['limited']['std']:.3f} |")
    conv = result["convergence"]
    lines += ["", f"Convergence: Reptile's final held-out accuracy {conv['reptile_final']:.3f} at step "
              f"{conv['reptile_steps']}; CTS first reaches it at step {conv['cts_steps_to_reptile_final']} "
              f"(ratio {conv['ratio']})." if conv["cts_steps_to_reptile_final"] is not None else
              f"Convergence: CTS never reaches Reptile's final held-out accuracy {conv['reptile_final']:.3f}."]
    lines += ["", "K sweep (all training data): | K | " + " | ".join(str(k) for k in result["k_sweep"]["K"]) + " |"]
    for name in ("cts", "reptile"):
        lines.append(f"| {name} | " + " | ".join(f"{result['k_sweep'][name][str(k)]['mean']:.3f} +- "
                                                 f"{result['k_sweep'][name][str(k)]['std']:.3f}" for k in result["k_sweep"]["K"]) + " |")
    lines += ["", "Search (held-out meta-train tasks' accuracy per meta lr):"]
    for name, s in result["search"].items():
        lines.append(f"- {name}: " + ", ".join(f"{lr:.3g} -> {acc:.3f}" for lr, acc in s["scores"])
                     + f"; selected {s['selected']:.3g}" + (" (at the end of the extended grid)" if s["at_edge"] else ""))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the small preset (about 15 minutes on 2 CPU cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", default=None, help="output directory (default: runs/meta_test[_quick])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set steps=2000 (JSON values)")
    p.add_argument("--backbone", default=None, help="override the backbone (e.g. resnet20 on a GPU)")
    args = p.parse_args(argv)

    preset_name = "quick" if args.quick else "full"
    preset = dict(PRESETS[preset_name])
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in preset:
            print(f"meta_test: error: --set {item}: unknown key; known: {', '.join(preset)}", file=sys.stderr)
            return 2
        preset[key] = json.loads(value)
    if args.backbone:
        BASE["backbone"] = args.backbone
    out = Path(args.out or f"runs/meta_test{'_quick' if args.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)

    import logging

    import torch

    from ctinit.errors import CtinitError
    from ctinit.tasks import META_TEST, META_TRAIN

    logging.getLogger("ctinit_training.meta_train").setLevel(logging.WARNING)
    started = time.perf_counter()
    train_tasks, test_tasks = builtin(META_TRAIN), builtin(META_TEST)
    search_train, search_val = train_tasks[:6], train_tasks[6:]
    steps, K = preset["steps"], preset["reset_period"]
    timings = {}
    try:
        # 1. search: the same three-point grid around each algorithm's centre, scored on held-out meta-train tasks
        t0 = time.perf_counter()
        say(f"[1/4] search: {len(ALGORITHMS)} algorithms x {len(LR_FACTORS)} (+{MAX_EXTENSIONS}) meta learning rates, "
            f"{preset['search_steps']} steps on {len(search_train)} tasks, scored on {', '.join(search_val)}")
        search = {}
        for algorithm in ALGORITHMS:
            search[algorithm] = search_meta_lr(out, algorithm, search_train, search_val, preset, K)
            ranked = search[algorithm]["scores"]
            say(f"  {algorithm}: " + ", ".join(f"{lr:.3g} -> {a:.3f}" for lr, a in ranked)
                + f"; selected {search[algorithm]['selected']:.3g}")
        timings["search"] = time.perf_counter() - t0

        # 2. meta-training on all meta-train tasks, equal budgets; CTS and Reptile record held-out accuracy
        t0 = time.perf_counter()
        say(f"[2/4] meta-training: {len(ALGORITHMS)} algorithms, {len(train_tasks)} tasks x {steps} steps, K {K}")
        validation = {"every": preset["snapshot_every"], "tasks": test_tasks,
                      "steps": preset["snapshot_finetune_steps"], "batch_size": 64, "lr": 1e-3, "seed": 0}
        runs = {}
        for algorithm in ALGORITHMS:
            runs[algorithm] = meta_train(out, f"{algorithm}-K{K}", algorithm, search[algorithm]["selected"], train_tasks,
                                         steps, K, validation if algorithm in ("cts", "reptile") else None)
        timings["meta_training"] = time.perf_counter() - t0

        # 3. fine-tuning on the meta-test tasks: all data and limited data
        t0 = time.perf_counter()
        inits = {a: runs[a]["init"] for a in ALGORITHMS}
        inits["scratch"] = f"scratch:{runs['cts']['init']}"
        say(f"[3/4] fine-tuning {len(inits)} initializations x {len(test_tasks)} tasks x {len(preset['seeds'])} seeds, "
            f"all data and {preset['limited_per_class']} examples per class")
        full = finetune_grid(inits, test_tasks, preset["seeds"], preset["finetune_steps"], preset["finetune_batch_size"])
        limited = finetune_grid(inits, test_tasks, preset["seeds"], preset["limited_finetune_steps"],
                                preset["finetune_batch_size"], per_class=preset["limited_per_class"])
        timings["finetuning"] = time.perf_counter() - t0

        # convergence: held-out accuracy along meta-training (step 0 is the shared starting point)
        start_accuracy = initial_accuracy(test_tasks, preset["snapshot_finetune_steps"])
        curves = {a: [[0, start_accuracy]] + runs[a]["validation_curve"] for a in ("cts", "reptile")}
        reptile_final = curves["reptile"][-1][1]
        # Counted from the first snapshot: if Reptile ends below the shared starting point, "CTS reached it at
        # step 0" would say nothing about CTS (that case is reported as reptile_gain <= 0).
        reached = steps_to_reach(curves["cts"][1:], reptile_final)

        # 4. K sweep for CTS and Reptile
        t0 = time.perf_counter()
        ks = [max(1, K // 10), K, K * 10]
        say(f"[4/4] K sweep: CTS and Reptile at K = {ks}")
        sweep_inits = {}
        for algorithm in ("cts", "reptile"):
            for k in ks:
                if k == K:
                    continue
                run = meta_train(out, f"{algorithm}-K{k}", algorithm, search[algorithm]["selected"], train_tasks, steps, k)
                sweep_inits[f"{algorithm}-K{k}"] = run["init"]
        sweep = finetune_grid(sweep_inits, test_tasks, preset["k_sweep_seeds"], preset["finetune_steps"],
                              preset["finetune_batch_size"])
        timings["k_sweep"] = time.perf_counter() - t0
    except CtinitError as e:
        print(f"meta_test: error: {e}", file=sys.stderr)
        return 2

    def seeds_subset(stats: dict, seeds: list[int]) -> dict:
        """Mean/std of a task average over only some seeds (the K sweep's seeds of the main grid)."""
        values = stats["values"][:len(seeds)]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        return {"mean": mean, "std": std, "n": len(values), "values": values}

    algorithms = {}
    for name in (*ALGORITHMS, "scratch"):
        algorithms[name] = {
            "mean_accuracy": full[name]["mean"]["mean"], "std": full[name]["mean"]["std"],
            "per_task": {t: {"mean": s["mean"], "std": s["std"]} for t, s in full[name]["tasks"].items()},
            "limited": {"mean": limited[name]["mean"]["mean"], "std": limited[name]["mean"]["std"],
                        "per_task": {t: {"mean": s["mean"], "std": s["std"]} for t, s in limited[name]["tasks"].items()}},
            "full": {"mean": full[name]["mean"]["mean"], "std": full[name]["mean"]["std"]},
            "seed_values": {"full": full[name]["mean"]["values"], "limited": limited[name]["mean"]["values"]},
            "meta_lr": search[name]["selected"] if name in search else None,
            "meta_train_seconds": runs[name]["seconds"] if name in runs else None,
        }
    k_sweep = {"K": ks, "seeds": preset["k_sweep_seeds"]}
    for algorithm in ("cts", "reptile"):
        k_sweep[algorithm] = {}
        for k in ks:
            stats = seeds_subset(full[algorithm]["mean"], preset["k_sweep_seeds"]) if k == K else sweep[f"{algorithm}-K{k}"]["mean"]
            k_sweep[algorithm][str(k)] = {"mean": stats["mean"], "std": stats["std"], "values": stats["values"]}
    convergence = {"cts_steps_to_reptile_final": reached, "reptile_steps": steps, "reptile_final": reptile_final,
                   "ratio": (reached / steps) if reached is not None else None,
                   "cts_final": curves["cts"][-1][1], "start": start_accuracy,
                   "reptile_gain": reptile_final - start_accuracy, "curves": curves,
                   "protocol": f"mean test accuracy on the meta-test tasks after {preset['snapshot_finetune_steps']} "
                               f"fine-tuning steps (Adam 1e-3, batch 64, seed 0) of phi every {preset['snapshot_every']} steps"}
    ranking = sorted(algorithms, key=lambda n: -algorithms[n]["mean_accuracy"])
    result = {
        "algorithms": algorithms,
        "convergence": convergence,
        "k_sweep": k_sweep,
        "search": search,
        "claims": {
            "cts_ahead_of_every_baseline_full": ranking[0] == "cts",
            "cts_ahead_of_every_baseline_limited": max(algorithms, key=lambda n: algorithms[n]["limited"]["mean"]) == "cts",
            "cts_reaches_reptile_final_within_half": reached is not None and reached <= steps / 2,
            "ranking_full": ranking,
        },
        "config": {"preset": preset_name, **preset, **{k: v for k, v in BASE.items()},
                   "algorithms": list(ALGORITHMS), "lr_centre": LR_CENTRE, "lr_factors": list(LR_FACTORS),
                   "meta_train_tasks": train_tasks, "meta_test_tasks": test_tasks, "search_train_tasks": search_train,
                   "search_validation_tasks": search_val, "task_steps_per_algorithm": steps * len(train_tasks)},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "timings_seconds": {**timings, "total": time.perf_counter() - started},
        "command": "python benchmarks/meta_test.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(result))
    plot_accuracy(algorithms, out / "accuracy.png")
    plot_convergence(convergence, out / "convergence.png")
    plot_k_sweep(k_sweep, out / "k_sweep.png")
    say(markdown(result))
    say(f"wrote {out}/results.json, results.md, accuracy.png, convergence.png, k_sweep.png "
        f"({result['timings_seconds']['total'] / 60:.1f} min)")
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
