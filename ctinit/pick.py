"""``ctinit pick``: which initialization to fine-tune for your data, measured on your data, fast enough to run first.

Two stages, both on a validation split carved from the task's training split (seeded, per class; the test split is
never read):

1. **Rank every candidate from one cheap signal** (:mod:`ctinit.pick_rank`): every compatible initialization
   (default: every zoo entry) is scored by the nearest-class-mean accuracy of its frozen features, one forward pass
   over the task each, no training.
2. **Fine-tune the best few briefly** (``top``, default :data:`DEFAULT_TOP`; 0: all): they and scratch of each of
   their architectures are fine-tuned for a few steps and seeds through :func:`ctinit.evaluate.run_evaluation` (the
   same fine-tuning as ``ctinit evaluate``). Each is compared with scratch of its own architecture by the paired
   difference of validation accuracy over seeds with a 95% t-interval; the recommendation is the most accurate
   initialization whose interval lies above 0, else the best scratch baseline.

It ends with the exact ``ctinit finetune`` command to run next.
"""
from __future__ import annotations

import json

from .errors import ConfigError
from .stats import BETTER, format_difference, paired_difference

#: Sized so that a new task of 20 images per class with 4 zoo entries (and 3 scratch architectures) is ranked in
#: minutes on 2 CPU cores (benchmarks/pick.py times it).
DEFAULT_STEPS = 60
DEFAULT_SEEDS = 3
DEFAULT_BATCH_SIZE = 32
DEFAULT_VAL_FRACTION = 0.25
#: Candidates fine-tuned in the second stage (the first stage's best); benchmarks/recorded/pick/signal-agreement.json
#: measures how often fine-tuning's best is among the signal's top 2.
DEFAULT_TOP = 2
NO_WINNER = "no initialization beats scratch here"
#: Config keys that name or describe a file rather than shape the architecture.
_NOT_ARCHITECTURE = {"ctinit", "architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype"}


def architecture_key(config) -> str:
    """Two initializations with the same key have the same architecture (the same scratch baseline)."""
    data = {k: v for k, v in config.to_dict().items() if k not in _NOT_ARCHITECTURE}
    return json.dumps(data, sort_keys=True, default=str)


def _channels(config) -> int:
    return int(getattr(config, "num_channels", 3) or 3)


def candidates(inits: list[str] | None, task_channels: int, log=None) -> tuple[list[str], dict[str, str]]:
    """``(initializations to try, {init: its scratch baseline})``. Default: every zoo entry whose input channels can
    take the task's; an incompatible init named explicitly is one line."""
    from . import zoo
    from .loading import init_config

    explicit = inits is not None
    if not explicit:
        inits = [zoo.PREFIX + name for name in zoo.names()]
        if not inits:
            raise ConfigError("the zoo has no initializations in this version; name some with --inits")
    chosen, scratch_of, first_of = [], {}, {}
    for init in dict.fromkeys(inits):
        if init.startswith("scratch:"):
            raise ConfigError(f"--inits {init}: pick adds scratch of every architecture itself; name initializations")
        config = init_config(init)
        if task_channels not in (1, _channels(config)):
            if explicit:
                raise ConfigError(f"--inits {init}: takes {_channels(config)}-channel images, the task has "
                                  f"{task_channels} channels")
            if log:
                log(f"ctinit pick: skipping {init} ({_channels(config)}-channel inputs, the task has {task_channels})")
            continue
        key = architecture_key(config)
        first_of.setdefault(key, init)
        chosen.append(init)
        scratch_of[init] = "scratch:" + first_of[key]
    if not chosen:
        raise ConfigError("no initialization can take this task's images; name some with --inits")
    return chosen, scratch_of


def pick(data: str, inits: list[str] | None = None, *, seeds=DEFAULT_SEEDS, config=None,
         validation_fraction: float = DEFAULT_VAL_FRACTION, max_train_per_class: int | None = None,
         max_train_samples: int | None = None, device: str | None = None, progress: bool = True, log=None,
         command: str | None = None, top: int = DEFAULT_TOP, workers: "str | int" = "auto") -> dict:
    """Rank the initializations on task ``data`` (see module doc); returns ``{"ranking": [...],
    "recommendation": INIT or "scratch", "next_command": "ctinit finetune ...", ...}`` with the evaluation's full
    results under ``"results"``. ``top``: how many of the first stage's best are fine-tuned (0: all); ``workers``:
    as :func:`ctinit.evaluate.run_evaluation`'s."""
    import dataclasses
    import time

    from .evaluate import parse_seeds, run_evaluation
    from .finetune import make_config
    from .pick_rank import feature_scores, shortlist
    from .tasks import load_task
    from .tasks.subsets import check_validation

    check_validation(validation_fraction, "validation")
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ConfigError(f"--top {top!r}: the number of candidates to fine-tune, 1 or more (0: all of them)")
    cfg = config or make_config(None, steps=DEFAULT_STEPS, batch_size=DEFAULT_BATCH_SIZE)
    if cfg.early_stop:
        raise ConfigError("pick fine-tunes each candidate for a fixed number of steps (--steps N or --epochs E); "
                          "early stopping (--early-stop, --steps auto) is for ctinit finetune and evaluate")
    if cfg.eval_every == 0 and cfg.epochs is None:  # scored after the last step only: no curve points on the way
        cfg = dataclasses.replace(cfg, eval_every=cfg.steps)
    task = load_task(data)  # its channels decide which inits can take it (bad specs fail here, before training)
    chosen, scratch_of = candidates(inits, task.image_shape[0], log)
    start = time.perf_counter()
    scores = feature_scores(chosen, data, validation_fraction=validation_fraction, seed=parse_seeds(seeds)[0],
                            max_train_per_class=max_train_per_class, max_train_samples=max_train_samples, log=log)
    first_stage = time.perf_counter() - start
    finalists = shortlist(scores, top)
    baselines = list(dict.fromkeys(scratch_of[i] for i in finalists))
    results = run_evaluation(finalists + baselines, [data], seeds, cfg, max_train_per_class=max_train_per_class,
                             max_train_samples=max_train_samples, device=device, progress=progress, log=log,
                             command=command, validation_fraction=validation_fraction, score="validation",
                             workers=workers)
    picked = rank(results, scratch_of)
    for row in picked["ranking"]:
        row["feature_score"] = scores[row["init"]]["ncm"] if row["init"] in scores else None
    picked["ranking"] += [_unshortlisted_row(init, scores[init]["ncm"]) for init in shortlist(scores, 0)
                          if init not in finalists]
    picked.update(first_stage_seconds=first_stage, seconds=first_stage + results["seconds"], top=top,
                  next_command=next_command(picked, data))
    return {**picked, "results": results}


def _unshortlisted_row(init: str, score: float) -> dict:
    """A candidate the first stage ranked below the shortlist: its signal only, not fine-tuned."""
    return {"init": init, "scratch": False, "feature_score": score, "validation_accuracy": None, "std": None,
            "seeds": 0, "values": {}, "baseline": None, "difference": None, "verdict": "not fine-tuned"}


def next_command(picked: dict, data: str) -> str:
    """The ``ctinit finetune`` command for the recommendation (scratch: the best scratch baseline fine-tuned), sized
    to the data by ``--steps auto`` (its default)."""
    import re
    import shlex

    init = picked["recommendation"]
    if init == "scratch":
        tuned = [r for r in picked["ranking"] if r["scratch"] and r["validation_accuracy"] is not None]
        init = max(tuned, key=lambda r: r["validation_accuracy"])["init"] if tuned else "scratch:resnet20"
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", picked["task"]).strip("-") or "task"
    return f"ctinit finetune --init {shlex.quote(init)} --data {shlex.quote(data)} --out {shlex.quote(out + '-model')}"


def rank(results: dict, scratch_of: dict[str, str]) -> dict:
    """The ranking (most accurate first) and the recommendation from an evaluation scored on validation."""
    from .report import seed_values

    spec = results["tasks"][0]["spec"]
    rows = []
    for entry in results["inits"]:
        label = entry["label"]
        stats = results["summary"][label]["tasks"][spec]
        row = {"init": label, "scratch": entry["scratch"], "validation_accuracy": stats["mean"],
               "std": stats["std"], "seeds": stats["n"],
               "values": {str(s): v for s, v in sorted(seed_values(results, label, spec).items())},
               "baseline": None, "difference": None, "verdict": None}
        if not entry["scratch"]:
            baseline = scratch_of[label]
            diff = paired_difference(seed_values(results, label, spec), seed_values(results, baseline, spec))
            row.update(baseline=baseline, difference={k: diff[k] for k in ("mean", "ci95", "n")},
                       verdict=diff["verdict"])
        rows.append(row)
    rows.sort(key=lambda r: -r["validation_accuracy"])
    winners = [r for r in rows if r["verdict"] == BETTER]
    task = results["tasks"][0]
    return {"task": task["name"], "spec": spec, "train_size": task["train_size"],
            "validation_size": task["validation_size"], "max_train_per_class": results.get("max_train_per_class"),
            "steps": results["finetune"]["steps"], "seeds": results["seeds"], "seconds": results["seconds"],
            "ranking": rows, "recommendation": winners[0]["init"] if winners else "scratch"}


def ranking_table(picked: dict) -> str:
    """The ranking as aligned text, then the recommendation (or :data:`NO_WINNER`) and the command to run next."""
    header = ["rank", "init", "feature score", "validation accuracy", "vs scratch (paired, 95% interval)", "verdict"]
    table = []
    for i, r in enumerate(picked["ranking"], 1):
        if r["validation_accuracy"] is None:
            acc = "-"
        else:
            acc = f"{r['validation_accuracy']:.3f} ± {r['std']:.3f}" if r["seeds"] > 1 else f"{r['validation_accuracy']:.3f}"
        versus = "-" if r["scratch"] or r["difference"] is None else format_difference(r["difference"])
        score = "-" if r.get("feature_score") is None else f"{r['feature_score']:.3f}"
        table.append([str(i), r["init"], score, acc, versus, "-" if r["scratch"] else r["verdict"]])
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + table]
    seeds = len(picked["seeds"])
    lines.append("")
    lines.append(f"{picked['task']}: {picked['train_size']} train / {picked['validation_size']} validation examples "
                 f"(carved from the training split; the test split is not used), {picked['steps']} steps, "
                 f"{seeds} seed{'s' if seeds != 1 else ''}, {picked['seconds']:.0f} s")
    if picked.get("top") is not None:
        lines.append(f"feature score: nearest-class-mean accuracy of the frozen features ({picked['first_stage_seconds']:.0f} s "
                     f"for all); the {picked['top'] or 'all'} best fine-tuned with scratch of their architectures")
    if picked["recommendation"] == "scratch":
        lines.append(f"recommendation: scratch ({NO_WINNER})")
    else:
        lines.append(f"recommendation: {picked['recommendation']}")
    if picked.get("next_command"):
        lines.append(f"next: {picked['next_command']}")
    return "\n".join(lines)


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_SEEDS", "DEFAULT_STEPS", "DEFAULT_TOP", "DEFAULT_VAL_FRACTION", "NO_WINNER",
           "architecture_key", "candidates", "next_command", "pick", "rank", "ranking_table"]
