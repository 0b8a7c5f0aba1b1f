"""The ratio protocol (issue 20): the paper's steps / K >= 100, every meta-seed with its own seeded split of the
suite into meta-train, validation and meta-test tasks, and its own rate choice per algorithm on its validation
tasks; meta-seed after meta-seed, so that an interrupted run leaves complete meta-seeds (``partial`` results)."""
from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from .claims import ahead_of_every, equivalence_claims, finish_claims
from .clock import Clock
from .config import StudyConfig
from .runs import Workspace, finetune_seeds, jsonable, recipe_of, say
from .search import choose_rate
from .stats import paired_claim, per_task_summaries, summary

CURVES_NOTE = "measured on meta-test tasks, not used for selection"
RECORD_VERSION = 1


#: Preset keys that do not change what one meta-seed computes (how many meta-seeds, how claims are judged).
NOT_PER_META_SEED = ("meta_seeds", "equivalence_margin", "optional_algorithms", "algorithms", "rate_grid")


def fingerprint(config: StudyConfig) -> str:
    """What one meta-seed's result depends on: the preset's per-meta-seed settings, the rate grids of the
    algorithms run, the trainer's full config of every meta-training (defaults included; execution choices left
    out), the suite, and the fine-tuning settings beyond the recipe once they differ from those the records were
    made with (``runs.changed_settings``). A record under another fingerprint is not reused."""
    from ctinit_training.config import DEFAULTS

    from .runs import changed_settings, training_config

    changed = changed_settings()
    what = {"version": RECORD_VERSION, "algorithms": list(config.algorithms), "suite": config.suite,
            "preset": {k: v for k, v in config.preset.items() if k not in NOT_PER_META_SEED},
            "rate_grid": {a: config.preset["rate_grid"][a] for a in config.algorithms},
            "trainer": training_config({**DEFAULTS, **config.base}), **({"settings": changed} if changed else {})}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def record_path(config: StudyConfig, meta_seed: int) -> Path:
    """The record's file: the fingerprint is in its name, so runs of other configs can share a folder."""
    return config.records_dir / f"meta_seed_{meta_seed}-{fingerprint(config)}.json"


def save_record(config: StudyConfig, m: int, split: dict, choices: dict, values: dict, made: dict) -> None:
    """One finished meta-seed as a small JSON file (no weights, no path): what a later run, on this machine or a
    fresh one, reuses instead of redoing the meta-seed. ``values``: as ``run_meta_seed`` returns them; ``made``:
    the machine and the time it took (``made_by``)."""
    from ctinit.atomic import write_text

    record = {"meta_seed": m, "fingerprint": fingerprint(config), "suite": config.suite_name, "split": split,
              "made": made,
              "choices": {a: {k: c[k] for k in ("scores", "chosen_lr", "at_edge")} for a, c in choices.items()},
              **{kind: {label: [[t, s, v] for (mm, t, s), v in sorted(acc.items()) if mm == m]
                        for label, acc in by_label.items()} for kind, by_label in values.items()}}
    config.records_dir.mkdir(parents=True, exist_ok=True)
    write_text(record_path(config, m), json.dumps(record, indent=1) + "\n")


def load_record(config: StudyConfig, m: int, split: dict) -> dict | None:
    """A finished meta-seed's record, or None when there is none (or it was made under another config)."""
    path = record_path(config, m)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("fingerprint") != fingerprint(config) or record.get("split") != split:
        say(f"  {path.name}: does not match this run's config or split; meta-seed {m} is redone")
        return None
    return record


def made_by(started: tuple[float, float]) -> dict:
    """Where and in how long a meta-seed was made: the machine, and the wall and CPU seconds since ``started``
    (perf_counter, process_time) in this process; meta-training runs or fine-tuning results that an earlier
    process left in OUT are reused and not counted."""
    from .report import machine

    return {"machine": machine(), "wall_seconds": round(time.perf_counter() - started[0]),
            "cpu_seconds": round(time.process_time() - started[1])}


def split_tasks(suite: dict, seed: int) -> dict:
    """One meta-seed's split of the suite. The tasks it may draw as meta-test tasks (``meta_test_pool``, default
    all but ``pinned_meta_train``) are put in one seeded random order; meta-seed m takes the next
    ``ratio_split["meta_test"]`` of them in that order (wrapping round) as its meta-test tasks, so that every task is a meta-test task about equally often and a few meta-seeds
    already cover them all; its validation tasks are drawn at random (seeded by m) from the rest; what is left,
    with the pinned tasks, is its meta-train set. The same seed gives the same split."""
    pinned = list(suite.get("pinned_meta_train", []))
    pool = sorted(t for t in suite["meta_train"] + suite["meta_test"] if t not in pinned)
    test_pool = sorted(suite.get("meta_test_pool", pool))
    random.Random("ctinit-study-split").shuffle(test_pool)
    n_test, n_val = suite["ratio_split"]["meta_test"], suite["ratio_split"]["validation"]
    meta_test = [test_pool[(seed * n_test + i) % len(test_pool)] for i in range(n_test)]
    rest = sorted(t for t in pool if t not in meta_test)
    validation = random.Random(f"ctinit-study-validation-{seed}").sample(rest, n_val)
    return {"meta_test": sorted(meta_test), "validation": sorted(validation),
            "meta_train": pinned + [t for t in rest if t not in validation]}


def run_ratio(config: StudyConfig, ws: Workspace, clock: Clock, publish: Callable[[dict], None]) -> dict:
    """Every meta-seed in turn (a meta-seed with a record in ``config.records_dir`` is reused as recorded); after
    each one ``publish`` gets the result so far (``partial`` until the last)."""
    seeds = config.preset["meta_seeds"]
    splits = {m: split_tasks(config.suite, m) for m in seeds}
    choices: dict = {}
    made: dict = {}
    values: dict = {"full": {}, "limited": {}, "curves": {}}
    result = {}
    for i, m in enumerate(seeds):
        record = load_record(config, m, splits[m])
        if record is not None:
            say(f"[meta-seed {m}: {i + 1}/{len(seeds)}] reusing {record_path(config, m).name}")
            ws.counts["meta_seeds_reused"] = ws.counts.get("meta_seeds_reused", 0) + 1
            choices[m], made[m] = record["choices"], record.get("made")  # records before 2026-12-04 have none
            mine = {kind: {label: {(m, t, s): v for t, s, v in rows} for label, rows in record[kind].items()}
                    for kind in values}
        else:
            say(f"[meta-seed {m}: {i + 1}/{len(seeds)}] meta-test {', '.join(splits[m]['meta_test'])}; validation "
                f"{', '.join(splits[m]['validation'])}; {len(splits[m]['meta_train'])} meta-train tasks x "
                f"{config.preset['steps']} steps, K {config.preset['reset_period']}")
            started = (time.perf_counter(), time.process_time())
            choices[m], mine = run_meta_seed(config, ws, clock, m, splits[m])
            made[m] = made_by(started)
            save_record(config, m, splits[m], choices[m], mine, made[m])
        for kind, by_label in mine.items():
            for label, acc in by_label.items():
                values[kind].setdefault(label, {}).update(acc)
        result = ratio_result(config, {s: splits[s] for s in seeds[:i + 1]}, choices, values["full"],
                              values["limited"], values["curves"])
        result["config"]["made"] = {str(s): made[s] for s in seeds[:i + 1]}
        result["progress"] = {"meta_seeds_done": i + 1, "meta_seeds_planned": len(seeds), **ws.counts}
        publish(result)
    return result


def run_meta_seed(config: StudyConfig, ws: Workspace, clock: Clock, m: int, split: dict) -> tuple[dict, dict]:
    """One meta-seed: choose each algorithm's rate on the validation tasks, fine-tune the chosen inits (and
    scratch) on the meta-test tasks, full and limited data, and every other candidate too (the beta curves:
    reporting only). Returns the choices and ``{"full"|"limited"|"curves": {label: {(m, task, seed): accuracy}}}``."""
    preset, n_ft = config.preset, config.preset["finetune_seeds_per_meta_seed"]
    clock.start("selection")
    choices = {a: choose_rate(ws, config, a, m, split) for a in config.algorithms}
    clock.stop()
    clock.start("finetune")
    chosen = {m: {**{a: choices[a]["init"] for a in config.algorithms}, "scratch": f"scratch:{choices['cts']['init']}"}}
    candidates = {m: {f"{a}@{lr:g}": init for a in config.algorithms for lr, init in choices[a]["inits"].items()}}
    tasks = {m: split["meta_test"]}
    values = {
        "full": ws.evaluate_by_meta_seed(chosen, tasks, n_ft, recipe_of(preset, preset["finetune_steps"])),
        "limited": ws.evaluate_by_meta_seed(chosen, tasks, n_ft, recipe_of(preset, preset["limited_finetune_steps"]),
                                            preset["limited_per_class"]),
        "curves": ws.evaluate_by_meta_seed(candidates, tasks, n_ft, recipe_of(preset, preset["finetune_steps"])),
    }
    clock.stop()
    return choices, values


def ratio_result(config: StudyConfig, splits: dict, choices: dict, full: dict, limited: dict, curves: dict) -> dict:
    """The statistics of the meta-seeds done so far (``splits``' keys): ``partial`` until every planned one is."""
    preset = config.preset
    done, planned = sorted(splits), preset["meta_seeds"]
    names = (*config.algorithms, "scratch")
    main = {}
    for name in names:
        main[name] = {"full": summary(full[name]), "limited": summary(limited[name]),
                      "per_task": per_task_summaries(full[name]), "meta_seeds": len(done),
                      "finetune_seeds_per_meta_seed": preset["finetune_seeds_per_meta_seed"],
                      "runs_full": jsonable(full[name]), "runs_limited": jsonable(limited[name])}
        if name != "scratch":
            main[name]["chosen_lr"] = {str(m): choices[m][name]["chosen_lr"] for m in done}
    claims = {}
    for setting, acc in (("full", full), ("limited", limited)):
        for b in config.baselines:
            claims[f"cts_beats_{b}_{setting}"] = paired_claim(acc["cts"], acc[b])
    claims["cts_ahead_of_every_baseline_full"] = ahead_of_every(claims, full, config.baselines, "cts_beats_{}_full")
    claims.update(equivalence_claims(full, config.baselines, "full", preset["equivalence_margin"]))
    selection = {a: {str(m): {k: choices[m][a][k] for k in ("scores", "chosen_lr", "at_edge")} for m in done}
                 for a in config.algorithms}
    recommendation = {"basis": "the rate each meta-seed chose on its validation tasks (held-out meta-train tasks)"}
    for a in config.algorithms:
        counts = Counter(choices[m][a]["chosen_lr"] for m in done)
        recommendation[a] = {"chosen_lr_counts": {f"{lr:g}": n for lr, n in sorted(counts.items())},
                             "most_chosen_lr": max(counts, key=lambda lr: (counts[lr], -lr))}
    beta_curves = {"note": CURVES_NOTE}
    for a in config.algorithms:
        grid = preset["rate_grid"][a]
        beta_curves[a] = {"betas": grid, "stats": [summary(curves[f"{a}@{lr:g}"]) for lr in grid]}
    meta_test = sorted({t for s in splits.values() for t in s["meta_test"]})
    n_ft = preset["finetune_seeds_per_meta_seed"]
    return {
        "suite": config.suite_name, "protocol": "ratio", "partial": set(done) != set(planned),
        "main": main, "claims": finish_claims(claims), "selection": selection, "recommendation": recommendation,
        "beta_curves_on_meta_test": beta_curves,
        "algorithms": {n: {"meta_seeds": len(done), "mean_accuracy": main[n]["full"]["mean"],
                           "ci95": main[n]["full"]["ci95"]} for n in names},
        "config": {"meta_test_tasks": meta_test, "splits": {str(m): s for m, s in splits.items()},
                   "steps_per_K": preset["steps"] / preset["reset_period"],
                   "finetune_seeds": {str(m): finetune_seeds(m, n_ft) for m in done},
                   "finetune_recipe": recipe_of(preset, preset["finetune_steps"]),
                   "selection_recipe": recipe_of(preset, preset["selection_finetune_steps"])},
    }
