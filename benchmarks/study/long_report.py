"""The long protocol's result (issue 29) from its run records: accuracies per (algorithm, K) and fine-tuning budget,
the claims (CTS - Reptile per K and its trend in K, CTS at the longest K vs the shortest, CTS vs MTL per K and
budget, steps to a meta-validation target), the tuning choices with their edge share, the convergence evidence of
the long budget, and the two figures (accuracy vs K; meta-validation curves at the longest K)."""
from __future__ import annotations

import math
from pathlib import Path

from .claims import finish_claims
from .config import StudyConfig
from .runs import finetune_seeds, jsonable, recipe_of
from .stats import band, equivalence_claim, paired_claim, per_meta_seed_means, steps_to_reach, summary


def entries(config: StudyConfig) -> dict[str, tuple[str, int | None]]:
    """Result name -> (algorithm, K): ``cts@K20`` for the K algorithms, ``mtl`` and ``scratch`` once."""
    from .long import pairs

    k_algorithms = config.preset["k_algorithms"]
    out = {(f"{a}@K{k}" if a in k_algorithms else a): (a, k) for a, k in pairs(config)}
    out["scratch"] = ("scratch", None)
    return out


def claim_label(choices: dict, algorithm: str, K: int | None, m: int) -> str:
    """The label of meta-seed m's claim run of an algorithm at K, at the rate the tuning chose (scratch takes none)."""
    from .long import run_label

    if algorithm == "scratch":
        return run_label("claim", "scratch", 0, None, m)
    return run_label("claim", algorithm, K, choices[algorithm][str(K)]["chosen_lr"], m)


def _record(runs: dict, choices: dict, algorithm: str, K: int | None, m: int) -> dict:
    return runs[claim_label(choices, algorithm, K, m)]


def accuracies(runs: dict, choices: dict, algorithm: str, K: int | None, done: list[int], budget: str) -> dict:
    """``{(meta_seed, task, finetune_seed): test accuracy}`` of one entry under one budget."""
    acc = {}
    for m in done:
        for row in _record(runs, choices, algorithm, K, m)["finetune"].get(budget, []):
            acc[(m, row[0], row[1])] = row[2]
    return acc


def slope_claim(diffs_by_k: dict[int, dict]) -> dict:
    """The trend of a paired difference in K: per meta-seed, the least-squares slope of its difference (mean over
    tasks and seeds) against log10 K; then the t-interval of the slopes over meta-seeds (per decade of K)."""
    per_k = {k: per_meta_seed_means(d) for k, d in diffs_by_k.items()}
    seeds = sorted(set.intersection(*[set(v) for v in per_k.values()]))
    xs = {k: math.log10(k) for k in per_k}
    x_mean = sum(xs.values()) / len(xs)
    sxx = sum((x - x_mean) ** 2 for x in xs.values())
    slopes = {}
    for m in seeds:
        y_mean = sum(per_k[k][m] for k in per_k) / len(per_k)
        slopes[(m, "slope", 0)] = sum((xs[k] - x_mean) * (per_k[k][m] - y_mean) for k in per_k) / sxx
    return paired_claim(slopes, {key: 0.0 for key in slopes})


def reach_claims(curves: dict, ks: list[int], fraction: float) -> tuple[dict, dict]:
    """Claim (d): per K and meta-seed, the steps CTS and Reptile take to reach ``fraction`` of the lower of their
    best meta-validation accuracies (so both reach it); the paired difference Reptile - CTS (positive: CTS sooner)."""
    claims, detail = {}, {}
    for k in ks:
        cts, rep, detail[str(k)] = {}, {}, {}
        for m, c in curves[f"cts@K{k}"].items():
            r = curves[f"reptile@K{k}"][m]
            if not c or not r:
                continue
            target = fraction * min(max(a for _, a in c), max(a for _, a in r))
            cts[(m, "steps", 0)], rep[(m, "steps", 0)] = steps_to_reach(c, target), steps_to_reach(r, target)
            detail[str(k)][str(m)] = {"target": target, "cts": cts[(m, "steps", 0)], "reptile": rep[(m, "steps", 0)]}
        if cts:
            claims[f"cts_reaches_target_sooner_than_reptile_K{k}"] = paired_claim(rep, cts)
    return claims, detail


def last_quarter(acc_curves: dict, steps: int, margin: float) -> dict:
    """Whether fine-tuning has converged: the validation accuracy at the last step minus that at 3/4 of the steps,
    per run, averaged within meta-seed; ``flat`` when two one-sided tests put it within +-margin."""
    end, three_quarters = {}, {}
    for key, curve in acc_curves.items():
        end[key] = curve[-1][1]
        three_quarters[key] = next(a for s, a in curve if s >= 0.75 * steps)
    change = equivalence_claim(end, three_quarters, margin)
    means = {}
    for (m, _, _), curve in acc_curves.items():
        means.setdefault(m, []).append(curve)
    per_seed = [[[s, sum(c[i][1] for c in cs) / len(cs)] for i, (s, _) in enumerate(cs[0])] for cs in means.values()]
    return {"last_quarter_change": change, "flat": change["verdict"] == "equivalent", "curve": band(per_seed)}


def long_result(config: StudyConfig, choices: dict, runs: dict, done: list[int]) -> dict:
    """The statistics of the claim meta-seeds done so far: ``partial`` until every planned one is."""

    preset = config.preset
    ks, budgets, planned = preset["reset_periods"], list(preset["finetune_budgets"]), preset["meta_seeds"]
    short = budgets[0]
    names = entries(config)
    acc = {n: {b: accuracies(runs, choices, a, k, done, b) for b in budgets} for n, (a, k) in names.items()}
    main, claims, curves, convergence, reach = {}, {}, {}, {}, {}
    if done:
        for n, (a, k) in names.items():
            main[n] = {"algorithm": a, "K": k, "meta_seeds": len(done),
                       "chosen_lr": choices[a][str(k)]["chosen_lr"] if a != "scratch" else None,
                       **{b: summary(acc[n][b]) for b in budgets if acc[n][b]},
                       "runs": {b: jsonable(acc[n][b]) for b in budgets if acc[n][b]}}
        k_algs = preset["k_algorithms"]
        curves = {n: {m: _record(runs, choices, a, k, m).get("validation_curve", []) for m in done}
                  for n, (a, k) in names.items() if a in k_algs}
        if "reptile" in k_algs:
            for k in ks:
                claims[f"cts_beats_reptile_K{k}_{short}"] = paired_claim(acc[f"cts@K{k}"][short],
                                                                          acc[f"reptile@K{k}"][short])
            claims[f"cts_minus_reptile_trend_in_K_{short}"] = slope_claim(
                {k: {key: acc[f"cts@K{k}"][short][key] - acc[f"reptile@K{k}"][short][key]
                     for key in acc[f"cts@K{k}"][short]} for k in ks})
            reach_c, reach = reach_claims(curves, ks, preset["reach_fraction"])
            claims.update(reach_c)
        claims[f"cts_K{ks[-1]}_beats_cts_K{ks[0]}_{short}"] = paired_claim(acc[f"cts@K{ks[-1]}"][short],
                                                                           acc[f"cts@K{ks[0]}"][short])
        if "mtl" in names:
            for k in ks:
                for b in budgets:
                    claims[f"cts_K{k}_beats_mtl_{b}"] = paired_claim(acc[f"cts@K{k}"][b], acc["mtl"][b])
        # what a user gains over training from scratch, at each budget (scratch's long one shown converged)
        for n in [f"cts@K{k}" for k in ks] + (["mtl"] if "mtl" in names else []):
            for b in budgets:
                if acc[n][b] and acc["scratch"][b]:
                    claims[f"{n.replace('@', '_')}_beats_scratch_{b}"] = paired_claim(acc[n][b], acc["scratch"][b])
        if "reptile" in k_algs:
            for k in ks:
                claims[f"cts_same_as_reptile_K{k}_{short}"] = equivalence_claim(
                    acc[f"cts@K{k}"][short], acc[f"reptile@K{k}"][short], preset["equivalence_margin"])
        for b, spec in preset["finetune_budgets"].items():
            if spec.get("curve"):
                convergence[b] = {n: last_quarter({(m, r[0], r[1]): r[3] for m in done for r in
                                                   _record(runs, choices, a, k, m)["finetune"][b]},
                                                  spec["steps"], preset["flat_margin"])
                                  for n, (a, k) in names.items() if acc[n][b]}
    tuning_m = preset["tuning_meta_seed"]
    edge = {a: [c["at_edge"] for c in choices[a].values()] for a in choices}
    selection = {"tuning_meta_seed": tuning_m, "choices": choices,
                 "edge_share": {a: sum(v) / len(v) for a, v in edge.items()}}
    cost = {}
    for record in runs.values():
        role = record.get("role", "claim")
        cost.setdefault(role, {"runs": 0, "cpu_seconds": 0, "wall_seconds": 0})
        cost[role]["runs"] += 1
        for f in ("cpu_seconds", "wall_seconds"):
            cost[role][f] += (record.get("made") or {}).get(f, 0)
    n_ft = preset["finetune_seeds_per_meta_seed"]
    from .ratio import split_tasks

    splits = {m: split_tasks(config.suite, m) for m in [tuning_m, *done]}
    return {
        "suite": config.suite_name, "protocol": "long", "partial": set(done) != set(planned),
        "main": main, "claims": finish_claims(claims) if claims else {}, "selection": selection,
        "meta_validation": {n: {"band": band([c for c in cs.values() if c]) if any(cs.values()) else None,
                                "curves": {str(m): c for m, c in cs.items()}} for n, cs in curves.items()},
        "meta_validation_reach": {"fraction": preset["reach_fraction"], "per_K": reach},
        "finetune_convergence": convergence,
        "algorithms": {n: {"meta_seeds": len(done), "mean_accuracy": main[n][short]["mean"],
                           "ci95": main[n][short]["ci95"]} for n in main},
        "recorded_cost": cost,
        "config": {"splits": {str(m): s for m, s in splits.items()},
                   "meta_test_tasks": sorted({t for m in done for t in splits[m]["meta_test"]}),
                   "finetune_seeds": {str(m): finetune_seeds(m, n_ft) for m in done},
                   "finetune_recipes": {b: {**recipe_of(preset, s["steps"]), "per_class": s.get("per_class")}
                                        for b, s in preset["finetune_budgets"].items()},
                   "steps_per_K": {str(k): preset["steps"] / k for k in ks}},
    }


# --------------------------------------------------------------------------------------------------- figures
def plot_accuracy_vs_k(result: dict, path: Path) -> None:
    """Mean test accuracy on the meta-test tasks vs K per algorithm (95% intervals over meta-seeds), one panel per
    fine-tuning budget; the inits without K (MTL, scratch) as a line with a band."""
    import matplotlib.pyplot as plt

    from .report import _axes, _err

    cfg, main = result["config"], result["main"]
    ks, budgets = cfg["reset_periods"], cfg["finetune_budgets"]
    fig, axes = _axes((4.2 * len(budgets), 4), ncols=len(budgets), squeeze=False)
    colors = {"cts": "tab:blue", "reptile": "tab:red", "mtl": "tab:green", "scratch": "tab:gray"}
    for ax, (budget, spec) in zip(axes[0], budgets.items()):
        for a in cfg["k_algorithms"]:
            stats = [main[f"{a}@K{k}"].get(budget) for k in ks]
            if None in stats:
                continue  # the budget is not run for this algorithm
            ax.errorbar(ks, [s["mean"] for s in stats], yerr=list(zip(*[_err(s) for s in stats])), fmt="o-",
                        capsize=3, color=colors.get(a), label=a)
        for n in (n for n in main if main[n]["algorithm"] not in cfg["k_algorithms"] and budget in main[n]):
            s = main[n][budget]
            ax.axhline(s["mean"], color=colors.get(n, "k"), ls="--", label=f"{n} (no K)")
            if s["ci95"]:
                ax.axhspan(s["ci95"][0], s["ci95"][1], color=colors.get(n, "k"), alpha=0.1)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("trajectory length K")
        ax.set_title(f"{budget}: {spec['steps']} steps, {spec.get('per_class') or 'all'} per class", fontsize=10)
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, 0.0), min(hi, 1.02))  # an interval over few meta-seeds can reach past what accuracy can be
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("mean test accuracy, meta-test tasks")
    n = len(cfg["finetune_seeds"])
    fig.suptitle(f"Accuracy vs K at S = {cfg['steps']} inner steps per task ({n} meta-seed{'s' * (n != 1)}; bars "
                 "and bands: 95% intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_meta_validation(result: dict, path: Path) -> None:
    """Meta-validation accuracy vs meta-training step for CTS and Reptile at the longest K (band: 95% over
    meta-seeds)."""
    from .report import _axes, _save

    k = result["config"]["reset_periods"][-1]
    fig, ax = _axes((6, 4))
    for a, color in (("cts", "tab:blue"), ("reptile", "tab:red")):
        b = (result["meta_validation"].get(f"{a}@K{k}") or {}).get("band")
        if not b:
            continue
        ax.plot(b["steps"], b["mean"], "o-", ms=3, color=color, label=f"{a}, K {k}")
        if all(c is not None for c in b["ci95"]):
            ax.fill_between(b["steps"], [c[0] for c in b["ci95"]], [c[1] for c in b["ci95"]], color=color, alpha=0.2)
    _save(fig, ax, path, f"Meta-validation accuracy at K = {k}\n(validation tasks; band: 95% over meta-seeds)",
          "meta-training step", f"accuracy after {result['config']['validation_steps']} fine-tuning steps")


FIGURES = {"accuracy_vs_k.png": plot_accuracy_vs_k, "meta_validation.png": plot_meta_validation}


def write_figures(result: dict, out: Path) -> list[str]:
    """The two figures, once a meta-seed is done."""
    if not result["main"]:
        return []
    for name, plot in FIGURES.items():
        plot(result, out / name)
    return list(FIGURES)


# --------------------------------------------------------------------------------------------------- markdown
def markdown_long(result: dict) -> str:
    from .report import _claims_table, _fmt

    cfg, main = result["config"], result["main"]
    budgets = list(cfg["finetune_budgets"])
    lines = [f"Suite {cfg['suite']}, preset {cfg['preset']}: S = {cfg['steps']} inner steps per task at every K of "
             f"{cfg['reset_periods']}; claim meta-seeds done: {', '.join(cfg['finetune_seeds']) or 'none'}; rates "
             f"chosen once per (algorithm, K) on tuning meta-seed {cfg['tuning_meta_seed']}. Mean test accuracy on "
             "each meta-seed's meta-test tasks [95% interval over meta-seeds]; budgets: "
             + "; ".join(f"{b} = {s['steps']} steps, {s['per_class'] or 'all'} per class"
                         for b, s in cfg["finetune_budgets"].items()) + ":", "",
             "| init | meta lr | " + " | ".join(budgets) + " |", "|---" * (len(budgets) + 2) + "|"]
    for n, a in main.items():
        lr = f"{a['chosen_lr']:g}" if a["chosen_lr"] is not None else "-"
        lines.append(f"| {n} | {lr} | " + " | ".join(_fmt(a[b]) if b in a else "-" for b in budgets) + " |")
    if result["claims"]:
        lines += [""] + _claims_table(result["claims"])
    sel = result["selection"]
    lines += ["", f"Tuning (meta-seed {sel['tuning_meta_seed']}, scored on its validation tasks; edge share per "
              "algorithm: " + ", ".join(f"{a} {v:.2f}" for a, v in sel["edge_share"].items()) + "):"]
    for a, by_k in sel["choices"].items():
        for k, c in by_k.items():
            lines.append(f"- {a} K {k}: " + ", ".join(f"{lr:g} -> {s:.3f}" for lr, s in c["scores"])
                         + f"; chosen {c['chosen_lr']:g}" + (" (AT THE GRID'S EDGE)" if c["at_edge"] else ""))
    for b, by_name in result["finetune_convergence"].items():
        s = by_name.get("scratch")
        if s:
            c = s["last_quarter_change"]
            ci = f"[{c['ci90'][0]:+.3f}, {c['ci90'][1]:+.3f}]" if c["ci90"] else "-"
            lines += ["", f"Convergence of budget {b}: scratch's validation accuracy, last step minus 3/4 of the steps: "
                      f"{c['diff']:+.3f}, 90% interval {ci} (flat within +-{c['margin']:g}: {s['flat']})."]
    return "\n".join(lines) + "\n"
