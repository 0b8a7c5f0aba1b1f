"""Choosing meta rates on held-out *meta-train* tasks only: the staged presets' grid search (rate x schedule, the
grid grown beyond a winning end) and the ratio protocol's choice inside one meta-seed from a fixed grid."""
from __future__ import annotations

from .config import LR_CENTRE, StudyConfig
from .runs import Workspace, recipe_of, run_name


def search_meta_lr(ws: Workspace, config: StudyConfig, algorithm: str, train: list[str], val: list[str],
                   K: int) -> dict:
    """The search of one algorithm at one K: three rates around its centre for each schedule, the grid grown
    beyond a winning end (for the winning schedule, ``max_extensions`` times at most); each candidate meta-trained
    on ``train`` (seed 0) and scored by fine-tuning on ``val`` (seed 0). Ties go to constant, the centre, then the
    smaller rate."""
    preset = config.preset
    factor = config.lr_factors[-1]
    scores: dict[tuple[str, float], float] = {}
    recipe = recipe_of(preset, preset["search_finetune_steps"])

    def score(candidates):
        inits = {}
        for schedule, lr in candidates:
            run = ws.meta_train(run_name("search-", algorithm, K, schedule, lr, 0), algorithm, lr, train,
                                preset["search_steps"], min(K, preset["search_steps"]), 0, schedule)
            inits[f"{schedule}:{lr:.6g}"] = run["init"]
        result = ws.finetune_grid(inits, val, [0], recipe)
        for schedule, lr in candidates:
            values = result[f"{schedule}:{lr:.6g}"].values()
            scores[(schedule, lr)] = sum(values) / len(values)

    def best():
        return max(scores, key=lambda c: (scores[c], c[0] == "constant", c[1] == LR_CENTRE[algorithm], -c[1]))

    score([(s, LR_CENTRE[algorithm] * f) for s in config.schedules for f in config.lr_factors])
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


def choose_rate(ws: Workspace, config: StudyConfig, algorithm: str, meta_seed: int, split: dict) -> dict:
    """The ratio protocol's choice for one algorithm inside one meta-seed: every rate of the preset's grid
    meta-trains on the meta-seed's meta-train tasks (its seed, constant schedule), each is scored by fine-tuning on
    its validation tasks (held-out meta-train tasks; the fine-tuning seeds are the meta-seed's first), and the best
    is kept (ties: the smaller rate). Returns every candidate's init too (the chosen one is the meta-seed's init)."""
    preset, K = config.preset, config.preset["reset_period"]
    grid = preset["rate_grid"][algorithm]
    inits = {f"{lr:g}": ws.meta_train(run_name("", algorithm, K, "constant", lr, meta_seed), algorithm, lr,
                                      split["meta_train"], preset["steps"], K, meta_seed)["init"] for lr in grid}
    recipe = recipe_of(preset, preset["selection_finetune_steps"])
    result = ws.finetune_grid(inits, split["validation"], [100 * meta_seed], recipe)
    scores = {lr: sum(result[f"{lr:g}"].values()) / len(result[f"{lr:g}"]) for lr in grid}
    chosen = max(grid, key=lambda lr: (scores[lr], -lr))
    return {"scores": [[lr, scores[lr]] for lr in grid], "chosen_lr": chosen, "at_edge": chosen in (min(grid), max(grid)),
            "init": inits[f"{chosen:g}"], "inits": {lr: inits[f"{lr:g}"] for lr in grid}}
