"""The staged protocol (presets quick, full, large): search, tuned protocol, paper protocol, beta robustness,
K sweep, convergence; each stage a function of the config, then the statistics of their accuracies."""
from __future__ import annotations

from .clock import Clock
from .config import K_SWEEP_ALGORITHMS, PAPER_META_LR, StudyConfig, paper_meta_lr
from .runs import Workspace, finetune_seeds, jsonable, paper_recipe, recipe_of, run_name, say
from .search import search_meta_lr
from .claims import ahead_of_every, equivalence_claims, finish_claims
from .stats import band, beta_width, combine, paired_claim, summary, value_at


def scratch_init(runs: dict, m: int) -> str:
    """Scratch: no meta-training; its fine-tuning starts from the architecture's own initialization."""
    return f"scratch:{runs[('cts', m)]['init']}"


def stage_search(ws: Workspace, config: StudyConfig, tasks: dict) -> dict:
    """Rate x schedule per algorithm (and per K for CTS and Reptile), on held-out meta-train tasks only."""
    preset, K = config.preset, config.preset["reset_period"]
    say(f"[1/5] search: rate x schedule per algorithm (and per K for {', '.join(K_SWEEP_ALGORITHMS)}), "
        f"{preset['search_steps']} steps on {len(tasks['search_train'])} meta-train tasks, scored on "
        f"{', '.join(tasks['search_validation'])}")
    search = {}
    for algorithm in config.algorithms:
        for k in (preset["k_sweep_ks"] if algorithm in K_SWEEP_ALGORITHMS else [K]):
            s = search[f"{algorithm}-K{k}"] = search_meta_lr(ws, config, algorithm, tasks["search_train"],
                                                             tasks["search_validation"], k)
            say(f"  {algorithm} K {k}: selected {s['selected_schedule']} {s['selected_lr']:.3g}")
    return search


def stage_tuned(ws: Workspace, config: StudyConfig, tasks: dict, search: dict) -> dict:
    """Every algorithm with its selection, every meta-seed; CTS and Reptile record the convergence curve."""
    preset, K, seeds = config.preset, config.preset["reset_period"], config.preset["meta_seeds"]
    n_ft = preset["finetune_seeds_per_meta_seed"]
    say(f"[2/5] tuned protocol: {len(config.algorithms)} algorithms x {len(seeds)} meta-seeds, "
        f"{len(tasks['meta_train'])} tasks x {preset['steps']} steps, K {K}; fine-tuned on "
        f"{len(tasks['meta_test'])} meta-test tasks x {n_ft} seeds per meta-seed")
    validation = {"every": preset["snapshot_every"], "tasks": tasks["meta_test"],
                  "steps": preset["snapshot_finetune_steps"], "batch_size": 64, "lr": 1e-3, "seed": 0}
    runs = {}
    for algorithm in config.algorithms:
        sel = search[f"{algorithm}-K{K}"]
        for m in seeds:
            runs[(algorithm, m)] = ws.meta_train(
                run_name("", algorithm, K, sel["selected_schedule"], sel["selected_lr"], m), algorithm,
                sel["selected_lr"], tasks["meta_train"], preset["steps"], K, m, sel["selected_schedule"],
                validation if algorithm in ("cts", "reptile") else None)
    inits = {m: {**{a: runs[(a, m)]["init"] for a in config.algorithms}, "scratch": scratch_init(runs, m)}
             for m in seeds}
    full = ws.evaluate_by_meta_seed(inits, tasks["meta_test"], n_ft, recipe_of(preset, preset["finetune_steps"]))
    limited = ws.evaluate_by_meta_seed(inits, tasks["meta_test"], n_ft,
                                       recipe_of(preset, preset["limited_finetune_steps"]), preset["limited_per_class"])
    return {"runs": runs, "full": full, "limited": limited}


def stage_paper(ws: Workspace, config: StudyConfig, tasks: dict) -> dict:
    """The paper's protocol: meta rate 1e-2 for every algorithm, the official fine-tuning recipe."""
    preset, K, seeds = config.preset, config.preset["reset_period"], config.preset["meta_seeds"]
    say(f"[3/5] paper protocol: every algorithm at meta lr {PAPER_META_LR:g} (Leap: x K, its scale here; constant, "
        f"soft reset); official fine-tuning recipe, {preset['paper_finetune_steps']} steps")
    runs = {}
    for algorithm in config.algorithms:
        for m in seeds:
            lr = paper_meta_lr(algorithm, K)
            runs[(algorithm, m)] = ws.meta_train(run_name("", algorithm, K, "constant", lr, m), algorithm, lr,
                                                 tasks["meta_train"], preset["steps"], K, m)
    inits = {m: {**{a: runs[(a, m)]["init"] for a in config.algorithms}, "scratch": scratch_init(runs, m)}
             for m in seeds}
    return ws.evaluate_by_meta_seed(inits, tasks["meta_test"], preset["paper_finetune_seeds_per_meta_seed"],
                                    paper_recipe(preset))


def stage_beta(ws: Workspace, config: StudyConfig, tasks: dict) -> dict:
    """CTS, Reptile and MTL over the rate grid (constant schedule), every meta-seed."""
    preset, K, seeds = config.preset, config.preset["reset_period"], config.preset["meta_seeds"]
    say(f"[4/5] beta robustness: {', '.join(config.beta_algorithms)} at meta lr {preset['beta_grid']}, constant "
        "schedule (measured on meta-test tasks, not used for selection)")
    acc = {}
    for algorithm in config.beta_algorithms:
        for beta in preset["beta_grid"]:
            by_seed = {m: {f"{beta:g}": ws.meta_train(run_name("", algorithm, K, "constant", beta, m), algorithm,
                                                      beta, tasks["meta_train"], preset["steps"], K, m)["init"]}
                       for m in seeds}
            acc[(algorithm, beta)] = ws.evaluate_by_meta_seed(
                by_seed, tasks["meta_test"], preset["finetune_seeds_per_meta_seed"],
                recipe_of(preset, preset["finetune_steps"]))[f"{beta:g}"]
    return acc


def stage_k_sweep(ws: Workspace, config: StudyConfig, tasks: dict, search: dict, tuned_full: dict) -> dict:
    """CTS and Reptile at every K of the sweep, each with its own search, every meta-seed."""
    preset, K, seeds = config.preset, config.preset["reset_period"], config.preset["meta_seeds"]
    say(f"[5/5] K sweep: {', '.join(K_SWEEP_ALGORITHMS)} at K = {preset['k_sweep_ks']}, each with its own search")
    acc = {}
    for algorithm in K_SWEEP_ALGORITHMS:
        for k in preset["k_sweep_ks"]:
            sel = search[f"{algorithm}-K{k}"]
            if k == K:
                acc[(algorithm, k)] = tuned_full[algorithm]
                continue
            by_seed = {m: {"k": ws.meta_train(run_name("", algorithm, k, sel["selected_schedule"], sel["selected_lr"], m),
                                              algorithm, sel["selected_lr"], tasks["meta_train"], preset["steps"], k, m,
                                              sel["selected_schedule"])["init"]} for m in seeds}
            acc[(algorithm, k)] = ws.evaluate_by_meta_seed(by_seed, tasks["meta_test"],
                                                           preset["finetune_seeds_per_meta_seed"],
                                                           recipe_of(preset, preset["finetune_steps"]))["k"]
    return acc


def staged_tasks(config: StudyConfig) -> dict:
    suite = config.suite
    validation = list(suite["search_validation"])
    return {"meta_train": list(suite["meta_train"]), "meta_test": list(suite["meta_test"]),
            "search_validation": validation,
            "search_train": [t for t in suite["meta_train"] if t not in validation]}


def run_staged(config: StudyConfig, ws: Workspace, clock: Clock) -> dict:
    """Every stage, then the statistics: the result object (``results.json``)."""
    preset, K, seeds = config.preset, config.preset["reset_period"], config.preset["meta_seeds"]
    tasks = staged_tasks(config)
    clock.start("search")
    search = stage_search(ws, config, tasks)
    clock.stop()
    clock.start("tuned")
    tuned_acc = stage_tuned(ws, config, tasks, search)
    clock.stop()
    clock.start("paper_protocol")
    paper_full = stage_paper(ws, config, tasks)
    clock.stop()
    clock.start("beta")
    beta_acc = stage_beta(ws, config, tasks)
    clock.stop()
    clock.start("k_sweep")
    k_acc = stage_k_sweep(ws, config, tasks, search, tuned_acc["full"])
    clock.stop()
    # convergence: held-out accuracy along meta-training, every meta-seed (step 0: the shared start, per seed)
    start = {m: ws.initial_accuracy(tasks["meta_test"], preset["snapshot_finetune_steps"], m) for m in seeds}

    runs, tuned_full, tuned_limited = tuned_acc["runs"], tuned_acc["full"], tuned_acc["limited"]
    names = (*config.algorithms, "scratch")
    n_ft = preset["finetune_seeds_per_meta_seed"]
    tuned = {}
    for name in names:
        sel = search.get(f"{name}-K{K}")
        tuned[name] = {"full": summary(tuned_full[name]), "limited": summary(tuned_limited[name]),
                       "meta_seeds": len(seeds), "finetune_seeds_per_meta_seed": n_ft,
                       "meta_lr": sel["selected_lr"] if sel else None,
                       "meta_lr_schedule": sel["selected_schedule"] if sel else None,
                       "meta_train_seconds": [runs[(name, m)]["seconds"] for m in seeds] if sel else None,
                       "per_task": {t.split(":", 1)[-1]: summary({k: v for k, v in tuned_full[name].items() if k[1] == t})
                                    for t in tasks["meta_test"]},
                       "runs_full": jsonable(tuned_full[name]), "runs_limited": jsonable(tuned_limited[name])}
    paper = {name: {"full": summary(paper_full[name]), "meta_seeds": len(seeds),
                    "meta_lr": paper_meta_lr(name, K) if name != "scratch" else None,
                    "runs_full": jsonable(paper_full[name])} for name in names}
    beta_robustness = {"note": "measured on meta-test tasks, not used for selection"}
    for algorithm in config.beta_algorithms:
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
                               "meta-steps, for every meta-seed; band: 95% t-interval over meta-seeds; measured on "
                               "meta-test tasks, not used for selection")

    claims = {}
    for setting, acc in (("full", tuned_full), ("limited", tuned_limited)):
        for b in config.baselines:
            claims[f"cts_beats_{b}_{setting}"] = paired_claim(acc["cts"], acc[b])
    for b in config.baselines:
        claims[f"paper_protocol_cts_beats_{b}"] = paired_claim(paper_full["cts"], paper_full[b])
    claims["cts_ahead_of_every_baseline_full"] = ahead_of_every(claims, tuned_full, config.baselines, "cts_beats_{}_full")
    claims["paper_protocol_cts_ahead_of_every_baseline_full"] = ahead_of_every(
        claims, paper_full, config.baselines, "paper_protocol_cts_beats_{}")
    # Convergence: CTS's held-out accuracy at half the steps minus Reptile's final one, paired by meta-seed.
    half = preset["steps"] // 2
    if all(any(s == half for s, _ in curves["cts"][m]) for m in seeds):
        cts_half = {(m, "held-out", 0): value_at(curves["cts"][m], half) for m in seeds}
        rep_final = {(m, "held-out", 0): curves["reptile"][m][-1][1] for m in seeds}
        claims["cts_reaches_reptile_final_within_half"] = paired_claim(cts_half, rep_final)
    k_long = max(preset["k_sweep_ks"])
    if k_long != K:
        claims["longer_k_helps_cts"] = paired_claim(k_acc[("cts", k_long)], k_acc[("cts", K)])
        claims["longer_k_helps_cts_more_than_reptile"] = paired_claim(
            combine(k_acc[("cts", k_long)], k_acc[("cts", K)]), combine(k_acc[("reptile", k_long)], k_acc[("reptile", K)]))
    claims.update(equivalence_claims(tuned_full, config.baselines, "full", 0.02))

    return {
        "suite": config.suite_name, "protocol": "staged", "partial": False,
        "tuned": tuned, "paper_protocol": paper, "claims": finish_claims(claims),
        "beta_robustness": beta_robustness, "k_sweep": k_sweep, "convergence": convergence, "search": search,
        "algorithms": {n: {"meta_seeds": tuned[n]["meta_seeds"], "mean_accuracy": tuned[n]["full"]["mean"],
                           "ci95": tuned[n]["full"]["ci95"]} for n in names},
        "config": {"meta_train_tasks": tasks["meta_train"], "meta_test_tasks": tasks["meta_test"],
                   "search_train_tasks": tasks["search_train"], "search_validation_tasks": tasks["search_validation"],
                   "task_steps_per_algorithm": preset["steps"] * len(tasks["meta_train"]),
                   "finetune_seeds": {str(m): finetune_seeds(m, n_ft) for m in seeds},
                   "finetune_recipe": recipe_of(preset, preset["finetune_steps"]),
                   "paper_finetune_recipe": paper_recipe(preset)},
    }
