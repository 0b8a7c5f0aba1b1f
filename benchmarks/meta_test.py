"""The reproduction study: CTS against Reptile, first-order MAML, Leap, multi-task learning and scratch, with
meta-training seeds, paired differences and 95% intervals, per-algorithm and per-K tuning, beta robustness and
the paper's own protocol side by side.

    python benchmarks/meta_test.py [--quick | --preset quick|full|large] [--json] [--suite glyph|colour] [--out DIR]
                                   [--set KEY=VALUE ...]
                                   [--backbone NAME] [--image-size N]

Stages (every number is a preset value; ``--quick`` shrinks steps and seeds and keeps every stage):

1. **search** (the tuned protocol): for every algorithm and every K of the sweep, the meta learning rate and the
   meta-rate schedule (constant or cosine decay to 0) are searched alike: three rates around the algorithm's
   centre (times 1/sqrt(10), 1, sqrt(10)) for each schedule, grown by one more rate beyond a winning end (for the
   winning schedule, at most ``max_extensions`` times). Each candidate meta-trains on the suite's search-train
   tasks (meta-train tasks) for ``search_steps`` steps, the final run's step count, and is scored by fine-tuning
   on the suite's search-validation tasks: held-out *meta-train* tasks. No meta-test task is read by the search
   (tests/test_meta_test.py checks it).
2. **tuned protocol**: every algorithm with its selection, ``meta_seeds`` meta-training seeds, on all meta-train
   tasks; equal budgets (same backbone, batch, inner optimizer, K, steps: every algorithm spends steps x tasks
   inner task-steps). CTS and Reptile record held-out accuracy along meta-training (convergence, bands over
   seeds). Every init is fine-tuned on every meta-test task with the fine-tuning seeds of its meta-seed, with
   all data and with ``limited_per_class`` examples per class.
3. **paper protocol**: every algorithm at the official meta rate 1e-2 (constant, soft reset), fine-tuned with the
   official recipe (Adam 1e-3, weight decay 5e-4, ``paper_finetune_steps`` steps, batch 128, lr x0.3 at 40/70/90%).
4. **beta robustness**: CTS, Reptile and MTL at every rate of ``beta_grid`` (constant schedule), every meta-seed;
   the width in decades of the range of rates within 1 point of each algorithm's best.
5. **K sweep**: CTS and Reptile at every K of ``k_sweep_ks``, each with its own search, every meta-seed.
6. statistics, figures (``accuracy.png``, ``convergence.png``, ``k_sweep.png``, ``beta.png``), ``results.json``
   and ``results.md`` in OUT.

Statistics. The unit of replication is the meta-training seed: fine-tuning runs that share a meta-trained init
are not independent. Every mean carries a t-interval over the per-meta-seed means (each the mean over meta-test
tasks and fine-tuning seeds), with n_meta_seeds - 1 degrees of freedom. Every claim is a *paired* difference:
for each (meta-seed, task, fine-tuning seed) the claim's side minus the other, averaged within each meta-seed;
``diff`` is the mean of those per-meta-seed differences and ``ci95`` its t-interval. A claim "holds" when the
interval excludes 0 in its favour, "fails" when it excludes 0 against it, and is "inconclusive" otherwise.

Meta-training runs are kept in ``OUT/runs/NAME`` and fine-tuning results in ``OUT/finetune_cache.json`` (keyed
by the init's weights, the task, the seed and the recipe); both are reused on restart. ``--json`` prints one
object on stdout; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALGORITHMS = ("cts", "reptile", "fomaml-cts", "fomaml", "leap", "mtl")
BASELINES = ("reptile", "fomaml-cts", "fomaml", "leap", "mtl", "scratch")
BETA_ALGORITHMS = ("cts", "reptile", "mtl")
K_SWEEP_ALGORITHMS = ("cts", "reptile")
#: Centre of each algorithm's meta learning-rate grid (SGD). CTS moves phi towards the trajectories every step
#: (0.1 is the quickstart's value); Reptile and FOMAML update once per K steps (Reptile's outer step size is 1 in
#: Nichol et al.); FOMAML-CTS and MTL step along a mean gradient every step. Leap: centred at 10 because the first
#: study's grid, centred at 1, selected its top end (31.6); this engine averages Leap's per-segment terms over the K
#: segments of a trajectory where the official code sums them, so a rate r there is r * K here.
LR_CENTRE = {"cts": 0.1, "reptile": 1.0, "fomaml-cts": 0.1, "fomaml": 1.0, "leap": 10.0, "mtl": 0.1}
LR_FACTORS = (10 ** -0.5, 1.0, 10 ** 0.5)
SCHEDULES = ("constant", "cosine")
#: The official code's meta rate, the same for every algorithm.
PAPER_META_LR = 1e-2


def paper_meta_lr(algorithm: str, K: int) -> float:
    """The official rate in this engine's scale: Leap's direction here is the official (summed over the K segments
    of a trajectory) one divided by K, so the official 1e-2 is 1e-2 * K here; every other rule has the same scale."""
    return PAPER_META_LR * K if algorithm == "leap" else PAPER_META_LR
#: FOMAML's held-out gradient comes from a validation split of each meta-train task (as in the official code):
#: this share of every class of the task's training split, seeded (the trainer's ``heldout_fraction``).
FOMAML_HELDOUT_FRACTION = 0.1

#: The shared setup of every meta-training run (the quickstart recipe's backbone, batch and inner optimizer).
BASE = {
    "backbone": "convnet4-32", "image_size": 28, "batch_size": 32,
    "inner_optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "meta_optimizer": {"name": "sgd", "lr": 0.1}, "reset": "soft", "augment": True, "log_every": 50,
}

#: Task suites: meta-train tasks, meta-test tasks, and which meta-train tasks the search holds out for scoring.
#: Adding a suite is one entry here.
SUITES = {
    "glyph": {
        "meta_train": ["builtin:fashion-mnist", "builtin:latin", "builtin:greek", "builtin:cyrillic",
                       "builtin:armenian", "builtin:hebrew", "builtin:devanagari", "builtin:arabic"],
        "meta_test": ["builtin:georgian", "builtin:thai", "builtin:ethiopic", "builtin:bengali"],
        "search_validation": ["builtin:devanagari", "builtin:arabic"],
    },
    # The heterogeneous colour suite (32x32 RGB; its meta-test domains have no task in meta-train).
    "colour": {
        "meta_train": ["builtin:colour-emoji-faces", "builtin:colour-emoji-objects", "builtin:colour-icons-actions",
                       "builtin:colour-icons-places", "builtin:colour-fashion", "builtin:colour-latin"],
        "meta_test": ["builtin:colour-cards", "builtin:colour-mahjong", "builtin:colour-textures"],
        "search_validation": ["builtin:colour-emoji-objects", "builtin:colour-icons-places"],
        "image_size": 32,
        # The textures task has 16 training images per class; limited-data fine-tuning takes 10 of them.
        "limited_per_class": 10,
    },
}

#: ``full`` is the CPU study that fits about two hours on 2 idle cores per suite (200 meta-steps: the search's
#: 50-odd candidates and ~100 meta-training runs are what cost). ``large`` is the first study's scale (1000
#: meta-steps, K 100; about 10 CPU-hours). The official fine-tuning recipe's shape (Adam 1e-3, weight decay 5e-4,
#: batch 128, lr x0.3 at 40/70/90%) is kept everywhere; ``full`` runs it for 200 steps instead of 1000.
PRESETS = {
    "full": {
        "steps": 200, "reset_period": 20, "search_steps": 200, "search_finetune_steps": 100,
        "max_extensions": 2, "meta_seeds": [0, 1, 2], "finetune_seeds_per_meta_seed": 1,
        "finetune_steps": 200, "finetune_batch_size": 64, "limited_per_class": 20, "limited_finetune_steps": 100,
        "snapshot_every": 50, "snapshot_finetune_steps": 100, "k_sweep_ks": [5, 20, 200],
        "beta_grid": [0.01, 0.0316, 0.1, 0.316, 1.0], "paper_finetune_steps": 200,
        "paper_finetune_seeds_per_meta_seed": 1,
    },
    "large": {
        "steps": 1000, "reset_period": 100, "search_steps": 1000, "search_finetune_steps": 150,
        "max_extensions": 2, "meta_seeds": [0, 1, 2], "finetune_seeds_per_meta_seed": 2,
        "finetune_steps": 200, "finetune_batch_size": 64, "limited_per_class": 20, "limited_finetune_steps": 100,
        "snapshot_every": 100, "snapshot_finetune_steps": 100, "k_sweep_ks": [10, 100, 1000],
        "beta_grid": [0.01, 0.0316, 0.1, 0.316, 1.0], "paper_finetune_steps": 1000,
        "paper_finetune_seeds_per_meta_seed": 1,
    },
    "quick": {
        "steps": 32, "reset_period": 8, "search_steps": 32, "search_finetune_steps": 20,
        "max_extensions": 1, "meta_seeds": [0, 1], "finetune_seeds_per_meta_seed": 1,
        "finetune_steps": 40, "finetune_batch_size": 64, "limited_per_class": 20, "limited_finetune_steps": 20,
        "snapshot_every": 8, "snapshot_finetune_steps": 20, "k_sweep_ks": [8, 32],
        "beta_grid": [0.01, 0.1, 1.0], "paper_finetune_steps": 40,
        "paper_finetune_seeds_per_meta_seed": 1,
    },
}

#: 97.5% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96 is within 2%).
def say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- statistics
from ctinit.stats import T975, mean_ci95, t_quantile_975  # noqa: E402,F401 - one definition, shared with ctinit


def verdict(ci95: list[float] | None) -> str:
    """``holds`` when the interval of a difference oriented in the claim's favour is above 0, ``fails`` when it
    is below 0, else ``inconclusive`` (also when there is no interval)."""
    if ci95 is None:
        return "inconclusive"
    lo, hi = ci95
    return "holds" if lo > 0 else "fails" if hi < 0 else "inconclusive"


def per_meta_seed_means(acc: dict) -> dict[int, float]:
    """``{(meta_seed, task, finetune_seed): value}`` -> ``{meta_seed: mean over its tasks and fine-tuning seeds}``."""
    groups: dict[int, list[float]] = {}
    for (m, _task, _seed), v in acc.items():
        groups.setdefault(m, []).append(v)
    return {m: sum(v) / len(v) for m, v in sorted(groups.items())}


def summary(acc: dict) -> dict:
    """Mean with a 95% interval over meta-seeds (the per-meta-seed means are the replicates)."""
    means = per_meta_seed_means(acc)
    stats = mean_ci95(list(means.values()))
    return {"mean": stats["mean"], "ci95": stats["ci95"], "meta_seeds": len(means), "n_runs": len(acc),
            "per_meta_seed": [means[m] for m in means]}


def paired_claim(favoured: dict, other: dict) -> dict:
    """The claim "favoured > other" as a paired difference over the keys both have ((meta-seed, task,
    fine-tuning seed), or any key whose first element is the meta-seed): mean within each meta-seed, then a
    t-interval over meta-seeds."""
    keys = sorted(set(favoured) & set(other))
    if not keys:
        raise ValueError("no pairs: the two sides share no (meta-seed, task, seed) key")
    diffs = per_meta_seed_means({k: favoured[k] - other[k] for k in keys})
    stats = mean_ci95(list(diffs.values()))
    return {"verdict": verdict(stats["ci95"]), "diff": stats["mean"], "ci95": stats["ci95"], "n_pairs": len(keys),
            "n_meta_seeds": len(diffs), "per_meta_seed": list(diffs.values())}


def combine(acc_a: dict, acc_b: dict, sign: float = -1.0) -> dict:
    """``a + sign * b`` key by key (for differences of differences)."""
    return {k: acc_a[k] + sign * acc_b[k] for k in set(acc_a) & set(acc_b)}


def beta_width(betas: list[float], means: list[float], tolerance: float = 0.01) -> dict:
    """The contiguous range of grid rates around the best whose mean is within ``tolerance`` of the best, and its
    width in decades (0 when only the best qualifies: then the true width is below one grid spacing).
    ``open_low``/``open_high``: the range reaches an end of the grid, so the true width may be larger."""
    order = sorted(range(len(betas)), key=lambda i: betas[i])
    b = [betas[i] for i in order]
    m = [means[i] for i in order]
    best = max(range(len(m)), key=lambda i: m[i])
    lo = hi = best
    while lo > 0 and m[lo - 1] >= m[best] - tolerance:
        lo -= 1
    while hi < len(m) - 1 and m[hi + 1] >= m[best] - tolerance:
        hi += 1
    return {"best_beta": b[best], "best_mean": m[best], "range": [b[lo], b[hi]],
            "width_decades": math.log10(b[hi] / b[lo]), "open_low": lo == 0, "open_high": hi == len(m) - 1}


def band(curves: list[list[list[float]]]) -> dict:
    """Mean and 95% t-band over seeds of curves [[step, value], ...] at the steps they share."""
    steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
    out = {"steps": steps, "mean": [], "ci95": []}
    for s in steps:
        stats = mean_ci95([next(v for t, v in c if t == s) for c in curves])
        out["mean"].append(stats["mean"])
        out["ci95"].append(stats["ci95"])
    return out


def steps_to_reach(curve: list[list[float]], target: float) -> int | None:
    """The first step of ``curve`` ([[step, accuracy], ...]) whose accuracy is at least ``target``."""
    return next((int(s) for s, a in curve if a >= target), None)


def value_at(curve: list[list[float]], step: int) -> float:
    return next(a for s, a in curve if s == step)


# ----------------------------------------------------------------------------------------- meta-training
def meta_train(out: Path, name: str, algorithm: str, lr: float, tasks: list[str], steps: int, reset_period: int,
               seed: int = 0, schedule: str = "constant", validation: dict | None = None) -> dict:
    """One meta-training run with the shared setup. Reused if OUT/runs/NAME holds a finished run of the same
    config (a run that recorded the validation curve also serves a request without one)."""
    from ctinit_training.config import DEFAULTS, validate
    from ctinit_training.meta_train import run

    config = copy.deepcopy(DEFAULTS)
    config.update(copy.deepcopy(BASE))
    config.update(algorithm=algorithm, tasks=list(tasks), steps=steps, reset_period=reset_period, seed=seed,
                  meta_lr_schedule=schedule)
    if algorithm == "fomaml":
        config["heldout_fraction"] = FOMAML_HELDOUT_FRACTION
    config["meta_optimizer"]["lr"] = lr
    if validation:
        config["validation"].update(validation)
    validate(config)
    # Two configs can share a name (rates 1.0 and 1.0000000000000002 both print as lr1): the second one goes to
    # NAME-DIGEST, so that no finished run is ever overwritten by another config.
    digest = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k != "validation"},
                                       sort_keys=True).encode()).hexdigest()[:8]
    candidates = [out / "runs" / name, out / "runs" / f"{name}-{digest}"]
    for run_dir in candidates:
        record = run_dir / "study.json"
        if not record.is_file():
            continue
        saved = json.loads(record.read_text())
        same = {k: v for k, v in saved["config"].items() if k != "validation"} == \
               {k: v for k, v in config.items() if k != "validation"}
        if same and (not validation or saved["config"]["validation"] == config["validation"]) \
                and (run_dir / "init" / "model.safetensors").is_file():
            say(f"  {name}: reusing {run_dir}")
            return saved
    run_dir = candidates[0] if not (candidates[0] / "study.json").is_file() else candidates[1]
    record = run_dir / "study.json"
    say(f"  {name}: meta-training {algorithm}, meta lr {lr:g} {schedule}, {len(tasks)} tasks x {steps} steps, "
        f"K {reset_period}, seed {seed}")
    summary_ = run(config, run_dir, progress=False, overwrite=True)  # a stale or partial run of another config
    curve = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if "validation_accuracy" in entry:
                curve.append([entry["step"], entry["validation_accuracy"]])
    saved = {"config": config, "init": summary_["init"], "seconds": summary_["seconds"], "validation_curve": curve}
    record.write_text(json.dumps(saved, indent=1))
    say(f"  {name}: {summary_['seconds']:.0f} s")
    return saved


def run_name(prefix: str, algorithm: str, K: int, schedule: str, lr: float, seed: int) -> str:
    return f"{prefix}{algorithm}-K{K}-{schedule}-lr{lr:.4g}-s{seed}"


# ----------------------------------------------------------------------------------------- fine-tuning
def _init_key(init: str) -> str:
    """What a fine-tuning result depends on of its init: the weights (scratch: only the architecture)."""
    if init.startswith("scratch:"):
        return f"scratch:{BASE['backbone']}:{BASE['image_size']}"
    return hashlib.sha256((Path(init) / "model.safetensors").read_bytes()).hexdigest()[:20]


def finetune_grid(out: Path, inits: dict[str, str], tasks: list[str], seeds: list[int], recipe: dict,
                  per_class: int | None = None) -> dict:
    """Test accuracy of every init on every task and seed: ``{label: {(task, seed): accuracy}}``. ``recipe``:
    steps, batch_size, optimizer. Results are cached in OUT/finetune_cache.json."""
    from ctinit.evaluate import run_evaluation
    from ctinit.finetune import FinetuneConfig

    cache_path = out / "finetune_cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}

    def key(init, task, seed):
        return json.dumps([_init_key(init), task, seed, recipe, per_class], sort_keys=True)

    missing = [label for label, init in inits.items()
               if any(key(init, t, s) not in cache for t in tasks for s in seeds)]
    if missing:
        config = FinetuneConfig(steps=recipe["steps"], batch_size=recipe["batch_size"], optimizer=dict(recipe["optimizer"]),
                                eval_every=recipe["steps"], progress=False)
        results = run_evaluation([inits[label] for label in missing], tasks, seeds=seeds, config=config,
                                 max_train_per_class=per_class, progress=False)
        for r in results["runs"]:
            cache[key(r["init"], r["task"], r["seed"])] = r["test_accuracy"]
        cache_path.write_text(json.dumps(cache))
    return {label: {(t, s): cache[key(init, t, s)] for t in tasks for s in seeds} for label, init in inits.items()}


def finetune_seeds(meta_seed: int, n: int) -> list[int]:
    """Each meta-seed's own fine-tuning seeds (distinct across meta-seeds)."""
    return [100 * meta_seed + j for j in range(n)]


def evaluate_by_meta_seed(out: Path, inits: dict[int, dict[str, str]], tasks: list[str], n_seeds: int, recipe: dict,
                          per_class: int | None = None) -> dict:
    """``{meta_seed: {label: init}}`` -> ``{label: {(meta_seed, task, finetune_seed): accuracy}}``."""
    acc: dict = {}
    for m, by_label in sorted(inits.items()):
        grid = finetune_grid(out, by_label, tasks, finetune_seeds(m, n_seeds), recipe, per_class)
        for label, values in grid.items():
            for (t, s), v in values.items():
                acc.setdefault(label, {})[(m, t, s)] = v
    return acc


def recipe_of(preset: dict, steps: int) -> dict:
    return {"steps": steps, "batch_size": preset["finetune_batch_size"], "optimizer": {"name": "adam", "lr": 1e-3}}


def paper_recipe(preset: dict) -> dict:
    """The official fine-tuning recipe (FinetuneConfig's milestones 40/70/90% and gamma 0.3 are the paper's)."""
    return {"steps": preset["paper_finetune_steps"], "batch_size": 128,
            "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 5e-4}}


# ----------------------------------------------------------------------------------------- search
def search_meta_lr(out: Path, algorithm: str, train: list[str], val: list[str], preset: dict, K: int) -> dict:
    """The search of one algorithm at one K: three rates around its centre for each schedule, the grid grown
    beyond a winning end (for the winning schedule, ``max_extensions`` times at most); each candidate meta-trained
    on ``train`` (seed 0) and scored by fine-tuning on ``val`` (seed 0). Ties go to constant, the centre, then the
    smaller rate."""
    factor = LR_FACTORS[-1]
    scores: dict[tuple[str, float], float] = {}
    recipe = recipe_of(preset, preset["search_finetune_steps"])

    def score(candidates):
        inits = {}
        for schedule, lr in candidates:
            run = meta_train(out, run_name("search-", algorithm, K, schedule, lr, 0), algorithm, lr, train,
                             preset["search_steps"], min(K, preset["search_steps"]), 0, schedule)
            inits[f"{schedule}:{lr:.6g}"] = run["init"]
        result = finetune_grid(out, inits, val, [0], recipe)
        for schedule, lr in candidates:
            values = result[f"{schedule}:{lr:.6g}"].values()
            scores[(schedule, lr)] = sum(values) / len(values)

    def best():
        return max(scores, key=lambda c: (scores[c], c[0] == "constant", c[1] == LR_CENTRE[algorithm], -c[1]))

    score([(s, LR_CENTRE[algorithm] * f) for s in SCHEDULES for f in LR_FACTORS])
    extensions = 0
    while extensions < preset["max_extensions"]:
        schedule, lr = best()
        rates = [r for s, r in scores if s == schedule]
        if lr == min(rates):
            score([(schedule, lr / factor)])
        elif lr == max(rates):
            score([(schedule, lr * factor)])
        else:
            break
        extensions += 1
    schedule, lr = best()
    rates = [r for s, r in scores if s == schedule]
    return {"scores": [[s, r, a] for (s, r), a in sorted(scores.items())], "selected_lr": lr,
            "selected_schedule": schedule, "extensions": extensions, "at_edge": lr in (min(rates), max(rates)),
            "train_tasks": train, "validation_tasks": val}


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
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _err(stats: dict) -> tuple[float, float]:
    if stats["ci95"] is None:
        return 0.0, 0.0
    return stats["mean"] - stats["ci95"][0], stats["ci95"][1] - stats["mean"]


def plot_accuracy(result: dict, path: Path) -> None:
    names = list(result["tuned"])
    fig, ax = _axes((9, 4))
    width = 0.27
    bars = (("tuned", "full", "tuned, all data"), ("tuned", "limited", "tuned, limited data"),
            ("paper_protocol", "full", "paper protocol, all data"))
    for i, (protocol, setting, label) in enumerate(bars):
        stats = [result[protocol][n][setting] for n in names]
        errs = list(zip(*[_err(s) for s in stats]))
        ax.bar([j + (i - 1) * width for j in range(len(names))], [s["mean"] for s in stats], width, yerr=errs,
               capsize=3, label=label)
    ax.set_xticks(range(len(names)), names)
    _save(fig, ax, path, "Fine-tuned from each initialization (mean, 95% interval over meta-seeds)", None,
          "mean test accuracy, meta-test tasks")


def plot_convergence(convergence: dict, path: Path) -> None:
    fig, ax = _axes((7, 4))
    for name, color in (("cts", "tab:blue"), ("reptile", "tab:red")):
        b = convergence[name]
        ax.plot(b["steps"], b["mean"], "o-", color=color, label=f"{name} (mean over meta-seeds)")
        if all(c is not None for c in b["ci95"]):
            ax.fill_between(b["steps"], [c[0] for c in b["ci95"]], [c[1] for c in b["ci95"]], color=color, alpha=0.2,
                            label=f"{name} 95% band")
    _save(fig, ax, path, "Meta-level convergence on the meta-test tasks", "meta-training step",
          "held-out accuracy (short fine-tuning)")


def plot_k_sweep(k_sweep: dict, path: Path) -> None:
    fig, ax = _axes((6, 4))
    for name, color in (("cts", "tab:blue"), ("reptile", "tab:red")):
        ks = k_sweep["K"]
        stats = [k_sweep[name][str(k)]["full"] for k in ks]
        ax.errorbar(ks, [s["mean"] for s in stats], yerr=list(zip(*[_err(s) for s in stats])), fmt="o-", capsize=3,
                    color=color, label=f"{name} (rate tuned per K)")
    ax.set_xscale("log")
    _save(fig, ax, path, "K sweep (same steps; meta rate and schedule searched per K)",
          "trajectory length K (reset period)", "mean test accuracy, meta-test tasks")


def plot_beta(beta: dict, path: Path) -> None:
    fig, ax = _axes((6, 4))
    for name, color in zip(BETA_ALGORITHMS, ("tab:blue", "tab:red", "tab:green")):
        curve = beta[name]
        ax.errorbar(curve["betas"], [s["mean"] for s in curve["stats"]],
                    yerr=list(zip(*[_err(s) for s in curve["stats"]])), fmt="o-", capsize=3, color=color,
                    label=f"{name}: within 1 pt of best over {curve['width']['width_decades']:.1f} decades")
    ax.set_xscale("log")
    _save(fig, ax, path, "Accuracy vs meta learning rate (constant schedule)", "meta learning rate beta",
          "mean test accuracy, meta-test tasks")


# ----------------------------------------------------------------------------------------- report
def _fmt(stats: dict) -> str:
    ci = stats["ci95"]
    return f"{stats['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{stats['mean']:.3f}"


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [f"Suite {cfg['suite']}, preset {cfg['preset']}: {cfg['steps']} meta-steps, K {cfg['reset_period']}, "
             f"meta-seeds {cfg['meta_seeds']}. Mean test accuracy on the meta-test tasks, [95% interval over "
             "meta-seeds]:", "",
             "| algorithm | tuned: meta lr, schedule | tuned, all data | tuned, limited data | paper protocol (lr 1e-2; Leap 1e-2 x K) |",
             "|---|---|---|---|---|"]
    for name in sorted(result["tuned"], key=lambda n: -result["tuned"][n]["full"]["mean"]):
        a, p = result["tuned"][name], result["paper_protocol"][name]
        lr = f"{a['meta_lr']:.3g}, {a['meta_lr_schedule']}" if a.get("meta_lr") is not None else "-"
        lines.append(f"| {name} | {lr} | {_fmt(a['full'])} | {_fmt(a['limited'])} | {_fmt(p['full'])} |")
    lines += ["", "Claims (paired difference, claim's side minus the other; 95% t-interval over meta-seeds):", "",
              "| claim | verdict | diff | 95% interval | pairs | meta-seeds |", "|---|---|---|---|---|---|"]
    for name, c in result["claims"].items():
        ci = f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" if c["ci95"] else "-"
        lines.append(f"| {name} | {c['verdict']} | {c['diff']:+.3f} | {ci} | {c['n_pairs']} | {c['n_meta_seeds']} |")
    lines += ["", "Beta robustness (constant schedule, all data):", "",
              "| meta lr beta | " + " | ".join(f"{b:g}" for b in cfg["beta_grid"]) + " | within 1 pt of best |",
              "|---" * (len(cfg["beta_grid"]) + 2) + "|"]
    for name, curve in result["beta_robustness"].items():
        w = curve["width"]
        lines.append(f"| {name} | " + " | ".join(_fmt(s) for s in curve["stats"]) +
                     f" | {w['width_decades']:.1f} decades ({w['range'][0]:g}-{w['range'][1]:g})"
                     + (" (reaches the grid's end)" if w["open_low"] or w["open_high"] else "") + " |")
    ks = result["k_sweep"]["K"]
    lines += ["", "K sweep (rate and schedule searched per K; all data):", "", "| K | " + " | ".join(str(k) for k in ks) + " |",
              "|---" * (len(ks) + 1) + "|"]
    for name in K_SWEEP_ALGORITHMS:
        lines.append(f"| {name} | " + " | ".join(
            f"{_fmt(result['k_sweep'][name][str(k)]['full'])} (lr {result['k_sweep'][name][str(k)]['meta_lr']:.3g} "
            f"{result['k_sweep'][name][str(k)]['meta_lr_schedule']})" for k in ks) + " |")
    conv = result["convergence"]
    lines += ["", "Convergence (held-out accuracy along meta-training, mean [95% band] over meta-seeds):", "",
              "| step | " + " | ".join(str(s) for s in conv["cts"]["steps"]) + " |", "|---" * (len(conv["cts"]["steps"]) + 1) + "|"]
    for name in ("cts", "reptile"):
        lines.append(f"| {name} | " + " | ".join(_fmt({"mean": m, "ci95": c}) for m, c in
                                                 zip(conv[name]["mean"], conv[name]["ci95"])) + " |")
    lines += ["", "Search (held-out meta-train tasks' accuracy per (schedule, meta lr)):"]
    for name, s in result["search"].items():
        lines.append(f"- {name}: " + ", ".join(f"{sch[:3]} {lr:.3g} -> {acc:.3f}" for sch, lr, acc in s["scores"])
                     + f"; selected {s['selected_schedule']} {s['selected_lr']:.3g}"
                     + (" (at the end of the extended grid)" if s["at_edge"] else ""))
    return "\n".join(lines) + "\n"


def jsonable(acc: dict) -> list:
    return [[m, t, s, v] for (m, t, s), v in sorted(acc.items())]


# ----------------------------------------------------------------------------------------- the study
def main(argv=None) -> int:
    import logging

    trainer_log = logging.getLogger("ctinit.meta_train")
    level = trainer_log.level
    trainer_log.setLevel(logging.WARNING)  # the trainer's per-run INFO lines; restored for whoever called main()
    try:
        return study(argv)
    finally:
        trainer_log.setLevel(level)


def study(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the small preset (under 20 minutes on 2 idle CPU cores)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="full (default; about 2 hours per suite on 2 idle CPU cores), quick (= --quick), or large "
                        "(1000 meta-steps, K 100; about 10 CPU-hours)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--suite", default="glyph", help=f"task suite: {', '.join(SUITES)}")
    p.add_argument("--out", default=None, help="output directory (default: runs/meta_test[_quick][_SUITE])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set steps=2000 (JSON values)")
    p.add_argument("--backbone", default=None, help="override the backbone (e.g. resnet20 on a GPU)")
    p.add_argument("--image-size", type=int, default=None, help="override the input size (e.g. 32 for colour tasks)")
    args = p.parse_args(argv)

    if args.quick and args.preset not in (None, "quick"):
        print(f"meta_test: error: --quick and --preset {args.preset} disagree; give one of them", file=sys.stderr)
        return 2
    preset_name = "quick" if args.quick else args.preset or "full"
    preset = copy.deepcopy(PRESETS[preset_name])
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in preset:
            print(f"meta_test: error: --set {item}: unknown key; known: {', '.join(preset)}", file=sys.stderr)
            return 2
        try:
            preset[key] = json.loads(value)
        except json.JSONDecodeError:
            print(f"meta_test: error: --set {item}: the value is not JSON (e.g. 2000, [10, 100], 0.1)", file=sys.stderr)
            return 2
    if args.suite not in SUITES:
        print(f"meta_test: error: --suite {args.suite}: unknown suite; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    suite = SUITES[args.suite]
    if "limited_per_class" in suite and not any(i.startswith("limited_per_class=") for i in args.set):
        preset["limited_per_class"] = suite["limited_per_class"]
    if preset["reset_period"] not in preset["k_sweep_ks"]:
        print("meta_test: error: k_sweep_ks must contain reset_period (the tuned protocol's K)", file=sys.stderr)
        return 2
    if args.backbone:
        BASE["backbone"] = args.backbone
    if args.image_size or suite.get("image_size"):
        BASE["image_size"] = args.image_size or suite["image_size"]
    default_out = f"runs/meta_test{'' if preset_name == 'full' else '_' + preset_name}" \
                  f"{'' if args.suite == 'glyph' else '_' + args.suite}"
    out = Path(args.out or default_out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from ctinit.errors import CtinitError

    started, cpu_started = time.perf_counter(), time.process_time()
    train_tasks, test_tasks = list(suite["meta_train"]), list(suite["meta_test"])
    search_val = list(suite["search_validation"])
    search_train = [t for t in train_tasks if t not in search_val]
    steps, K, seeds = preset["steps"], preset["reset_period"], preset["meta_seeds"]
    n_ft = preset["finetune_seeds_per_meta_seed"]
    ft_full, ft_limited = recipe_of(preset, preset["finetune_steps"]), recipe_of(preset, preset["limited_finetune_steps"])
    timings, cpu = {}, {}

    def stage(name, t0, c0):
        timings[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0
        say(f"  ({name}: {timings[name] / 60:.1f} min wall, {cpu[name] / 60:.1f} min CPU)")

    try:
        # 1. search, per algorithm and per K, on held-out meta-train tasks only
        t0, c0 = time.perf_counter(), time.process_time()
        say(f"[1/5] search: rate x schedule per algorithm (and per K for {', '.join(K_SWEEP_ALGORITHMS)}), "
            f"{preset['search_steps']} steps on {len(search_train)} meta-train tasks, scored on {', '.join(search_val)}")
        search = {}
        for algorithm in ALGORITHMS:
            for k in (preset["k_sweep_ks"] if algorithm in K_SWEEP_ALGORITHMS else [K]):
                s = search[f"{algorithm}-K{k}"] = search_meta_lr(out, algorithm, search_train, search_val, preset, k)
                say(f"  {algorithm} K {k}: selected {s['selected_schedule']} {s['selected_lr']:.3g}")
        stage("search", t0, c0)

        # 2. tuned protocol: every algorithm, every meta-seed; CTS and Reptile record the convergence curve
        t0, c0 = time.perf_counter(), time.process_time()
        say(f"[2/5] tuned protocol: {len(ALGORITHMS)} algorithms x {len(seeds)} meta-seeds, {len(train_tasks)} tasks "
            f"x {steps} steps, K {K}; fine-tuned on {len(test_tasks)} meta-test tasks x {n_ft} seeds per meta-seed")
        validation = {"every": preset["snapshot_every"], "tasks": test_tasks,
                      "steps": preset["snapshot_finetune_steps"], "batch_size": 64, "lr": 1e-3, "seed": 0}
        runs: dict = {}
        for algorithm in ALGORITHMS:
            sel = search[f"{algorithm}-K{K}"]
            for m in seeds:
                runs[(algorithm, m)] = meta_train(
                    out, run_name("", algorithm, K, sel["selected_schedule"], sel["selected_lr"], m), algorithm,
                    sel["selected_lr"], train_tasks, steps, K, m, sel["selected_schedule"],
                    validation if algorithm in ("cts", "reptile") else None)
        inits = {m: {**{a: runs[(a, m)]["init"] for a in ALGORITHMS}, "scratch": f"scratch:{runs[('cts', m)]['init']}"}
                 for m in seeds}
        tuned_full = evaluate_by_meta_seed(out, inits, test_tasks, n_ft, ft_full)
        tuned_limited = evaluate_by_meta_seed(out, inits, test_tasks, n_ft, ft_limited, preset["limited_per_class"])
        stage("tuned", t0, c0)

        # 3. the paper's protocol: meta rate 1e-2 for every algorithm, the official fine-tuning recipe
        t0, c0 = time.perf_counter(), time.process_time()
        say(f"[3/5] paper protocol: every algorithm at meta lr {PAPER_META_LR:g} (Leap: x K, its scale here; constant, soft reset); "
            f"official fine-tuning recipe, {preset['paper_finetune_steps']} steps")
        paper_runs = {}
        for algorithm in ALGORITHMS:
            for m in seeds:
                lr = paper_meta_lr(algorithm, K)
                paper_runs[(algorithm, m)] = meta_train(out, run_name("", algorithm, K, "constant", lr, m), algorithm,
                                                        lr, train_tasks, steps, K, m)
        paper_inits = {m: {**{a: paper_runs[(a, m)]["init"] for a in ALGORITHMS},
                           "scratch": f"scratch:{paper_runs[('cts', m)]['init']}"} for m in seeds}
        paper_full = evaluate_by_meta_seed(out, paper_inits, test_tasks, preset["paper_finetune_seeds_per_meta_seed"],
                                           paper_recipe(preset))
        stage("paper_protocol", t0, c0)

        # 4. beta robustness: CTS, Reptile, MTL over the rate grid (constant schedule), every meta-seed
        t0, c0 = time.perf_counter(), time.process_time()
        say(f"[4/5] beta robustness: {', '.join(BETA_ALGORITHMS)} at meta lr {preset['beta_grid']}, constant schedule")
        beta_acc: dict = {}
        for algorithm in BETA_ALGORITHMS:
            for beta in preset["beta_grid"]:
                by_seed = {m: {f"{beta:g}": meta_train(out, run_name("", algorithm, K, "constant", beta, m), algorithm,
                                                       beta, train_tasks, steps, K, m)["init"]} for m in seeds}
                beta_acc[(algorithm, beta)] = evaluate_by_meta_seed(out, by_seed, test_tasks, n_ft, ft_full)[f"{beta:g}"]
        stage("beta", t0, c0)

        # 5. K sweep with per-K selections, every meta-seed
        t0, c0 = time.perf_counter(), time.process_time()
        say(f"[5/5] K sweep: {', '.join(K_SWEEP_ALGORITHMS)} at K = {preset['k_sweep_ks']}, each with its own search")
        k_acc: dict = {}
        for algorithm in K_SWEEP_ALGORITHMS:
            for k in preset["k_sweep_ks"]:
                sel = search[f"{algorithm}-K{k}"]
                if k == K:
                    k_acc[(algorithm, k)] = tuned_full[algorithm]
                    continue
                by_seed = {m: {"k": meta_train(out, run_name("", algorithm, k, sel["selected_schedule"], sel["selected_lr"], m),
                                               algorithm, sel["selected_lr"], train_tasks, steps, k, m,
                                               sel["selected_schedule"])["init"]} for m in seeds}
                k_acc[(algorithm, k)] = evaluate_by_meta_seed(out, by_seed, test_tasks, n_ft, ft_full)["k"]
        stage("k_sweep", t0, c0)

        # convergence: held-out accuracy along meta-training, every meta-seed (step 0: the shared start, per seed)
        start = {m: initial_accuracy(test_tasks, preset["snapshot_finetune_steps"], m) for m in seeds}
    except CtinitError as e:
        print(f"meta_test: error: {e}", file=sys.stderr)
        return 2

    # ------------------------------------------------------------------------------- statistics
    names = (*ALGORITHMS, "scratch")
    tuned = {}
    for name in names:
        sel = search.get(f"{name}-K{K}")
        tuned[name] = {"full": summary(tuned_full[name]), "limited": summary(tuned_limited[name]),
                       "meta_seeds": len(seeds), "finetune_seeds_per_meta_seed": n_ft,
                       "meta_lr": sel["selected_lr"] if sel else None,
                       "meta_lr_schedule": sel["selected_schedule"] if sel else None,
                       "meta_train_seconds": [runs[(name, m)]["seconds"] for m in seeds] if sel else None,
                       "per_task": {t.split(":", 1)[-1]: summary({k: v for k, v in tuned_full[name].items() if k[1] == t})
                                    for t in test_tasks},
                       "runs_full": jsonable(tuned_full[name]), "runs_limited": jsonable(tuned_limited[name])}
    paper = {name: {"full": summary(paper_full[name]), "meta_seeds": len(seeds),
                    "meta_lr": paper_meta_lr(name, K) if name != "scratch" else None,
                    "runs_full": jsonable(paper_full[name])} for name in names}
    beta_robustness = {}
    for algorithm in BETA_ALGORITHMS:
        stats = [summary(beta_acc[(algorithm, b)]) for b in preset["beta_grid"]]
        beta_robustness[algorithm] = {"betas": preset["beta_grid"], "stats": stats,
                                      "width": beta_width(preset["beta_grid"], [s["mean"] for s in stats], 0.01)}
    k_sweep = {"K": preset["k_sweep_ks"]}
    for algorithm in K_SWEEP_ALGORITHMS:
        k_sweep[algorithm] = {str(k): {"full": summary(k_acc[(algorithm, k)]),
                                       "meta_lr": search[f"{algorithm}-K{k}"]["selected_lr"],
                                       "meta_lr_schedule": search[f"{algorithm}-K{k}"]["selected_schedule"]}
                              for k in preset["k_sweep_ks"]}
    curves = {a: {m: [[0, start[m]]] + runs[(a, m)]["validation_curve"] for m in seeds} for a in ("cts", "reptile")}
    convergence = {a: band(list(curves[a].values())) for a in curves}
    convergence["curves"] = {a: {str(m): c for m, c in curves[a].items()} for a in curves}
    convergence["protocol"] = (f"mean test accuracy on the meta-test tasks after {preset['snapshot_finetune_steps']} "
                               f"fine-tuning steps (Adam 1e-3, batch 64, seed 0) of phi every {preset['snapshot_every']} "
                               "meta-steps, for every meta-seed; band: 95% t-interval over meta-seeds")

    claims = {}
    for setting, acc in (("full", tuned_full), ("limited", tuned_limited)):
        for b in BASELINES:
            claims[f"cts_beats_{b}_{setting}"] = paired_claim(acc["cts"], acc[b])
    for b in BASELINES:
        claims[f"paper_protocol_cts_beats_{b}"] = paired_claim(paper_full["cts"], paper_full[b])
    for protocol, acc in (("", tuned_full), ("paper_protocol_", paper_full)):
        strongest = max(BASELINES, key=lambda b: summary(acc[b])["mean"])
        c = dict(paired_claim(acc["cts"], acc[strongest]))
        parts = [paired_claim(acc["cts"], acc[b])["verdict"] for b in BASELINES]
        c["verdict"] = "holds" if all(v == "holds" for v in parts) else "fails" if "fails" in parts else "inconclusive"
        c["against"] = strongest
        claims[f"{protocol}cts_ahead_of_every_baseline_full"] = c
    # Convergence: CTS's held-out accuracy at half the steps minus Reptile's final one, paired by meta-seed.
    half = steps // 2
    if all(any(s == half for s, _ in curves["cts"][m]) for m in seeds):
        cts_half = {(m, "held-out", 0): value_at(curves["cts"][m], half) for m in seeds}
        rep_final = {(m, "held-out", 0): curves["reptile"][m][-1][1] for m in seeds}
        claims["cts_reaches_reptile_final_within_half"] = paired_claim(cts_half, rep_final)
    k_long = max(preset["k_sweep_ks"])
    if k_long != K:
        claims["longer_k_helps_cts"] = paired_claim(k_acc[("cts", k_long)], k_acc[("cts", K)])
        claims["longer_k_helps_cts_more_than_reptile"] = paired_claim(
            combine(k_acc[("cts", k_long)], k_acc[("cts", K)]), combine(k_acc[("reptile", k_long)], k_acc[("reptile", K)]))
    claims_public = {k: {f: v[f] for f in ("verdict", "diff", "ci95", "n_pairs", "n_meta_seeds", "per_meta_seed", "against")
                         if f in v} for k, v in claims.items()}

    result = {
        "suite": args.suite,
        "tuned": tuned,
        "paper_protocol": paper,
        "claims": claims_public,
        "beta_robustness": beta_robustness,
        "k_sweep": k_sweep,
        "convergence": convergence,
        "search": search,
        "algorithms": {n: {"meta_seeds": tuned[n]["meta_seeds"], "mean_accuracy": tuned[n]["full"]["mean"],
                           "ci95": tuned[n]["full"]["ci95"]} for n in names},
        "config": {"preset": preset_name, "suite": args.suite, **preset, **copy.deepcopy(BASE),
                   "algorithms": list(ALGORITHMS), "lr_centre": LR_CENTRE, "lr_factors": list(LR_FACTORS),
                   "schedules": list(SCHEDULES), "paper_meta_lr": PAPER_META_LR,
                   "fomaml_heldout_fraction": FOMAML_HELDOUT_FRACTION, "meta_train_tasks": train_tasks,
                   "meta_test_tasks": test_tasks, "search_train_tasks": search_train,
                   "search_validation_tasks": search_val, "task_steps_per_algorithm": steps * len(train_tasks),
                   "finetune_seeds": {str(m): finetune_seeds(m, n_ft) for m in seeds},
                   "finetune_recipe": ft_full, "paper_finetune_recipe": paper_recipe(preset),
                   "statistics": "per-meta-seed means; 95% t-interval over meta-seeds (df = n_meta_seeds - 1); "
                                 "claims: paired differences averaged within meta-seed"},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "timings_seconds": {**timings, "total": time.perf_counter() - started},
        "cpu_seconds": {**cpu, "total": time.process_time() - cpu_started},
        "command": "python benchmarks/meta_test.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(result))
    plot_accuracy(result, out / "accuracy.png")
    plot_convergence(convergence, out / "convergence.png")
    plot_k_sweep(k_sweep, out / "k_sweep.png")
    plot_beta(beta_robustness, out / "beta.png")
    say(markdown(result))
    say(f"wrote {out}/results.json, results.md, accuracy.png, convergence.png, k_sweep.png, beta.png "
        f"({result['timings_seconds']['total'] / 60:.1f} min wall, {result['cpu_seconds']['total'] / 60:.1f} min CPU)")
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


def initial_accuracy(tasks: list[str], steps: int, seed: int) -> float:
    """Held-out accuracy of a meta-training run's starting point (step 0 of its convergence curve)."""
    import torch

    from ctinit.models import build_backbone
    from ctinit.tasks import load_task
    from ctinit_training.meta_train import meta_validate

    torch.manual_seed(seed)  # what training.meta_train.run does before it builds the backbone
    backbone = build_backbone(BASE["backbone"], BASE["image_size"])
    loaded = [load_task(spec, image_size=BASE["image_size"], seed=0) for spec in tasks]
    return meta_validate(backbone, loaded, {"steps": steps, "batch_size": 64, "lr": 1e-3, "seed": 0})


if __name__ == "__main__":
    sys.exit(main())
