"""Compare initializations side by side: fine-tune each on each task for each seed, then tabulate and plot.

    results = run_evaluation(["runs/cts/init", "ORG/NAME", "scratch:runs/cts/init"], ["builtin:georgian"],
                             seeds=[0, 1, 2], config=FinetuneConfig(steps=300))
    ctinit.report.write_results(results, "runs/eval")   # results.json, results.md, curves.png

Every (init, task, seed) run is ``ctinit finetune --init INIT --data TASK --seed SEED`` with the same recipe, on
the task's training split less a validation split (``validation_fraction`` of each class, seeded, carved before any
limited-data subset is drawn, so that a limited subset keeps its size): the accuracy curves (and so any choice of
steps) are measured on that validation split, never on the test split. The seed drives the validation split, the
head's initialization, the batch order and augmentation, the limited-data subset, the fresh weights of ``scratch:``
inits and the hold-out split of sources without a test split. The table reports the test accuracy after the last
step as mean ± sample standard deviation over seeds; the average row takes, for each seed, the mean over tasks, then
mean ± std of those over seeds. A cell is bold only when its init beats every other column by a paired 95% interval
(over seeds) that excludes 0. ``score="validation"`` (``ctinit pick``) reports the validation accuracy instead and
never reads the test split.

The folder it writes and the table and plot it renders are :mod:`ctinit.report`'s; the validation split and the
limited-data subsets are :mod:`ctinit.tasks.subsets`'. Putting results into a model card is ``ctinit-hub``'s job
(``ctinit-hub export RUN OUT --results EVAL_DIR``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from .version import __version__
from .errors import ConfigError
from .finetune import EXECUTION_FIELDS, FinetuneConfig, run_identity, uses_hflip
from .finetune_runs import RunJob, plan_workers, run_jobs
from .jsonl import read_jsonl
from .hubio.names import WEIGHTS_NAME
from .loading import InitSource, init_config, init_info, resolve_init
from .models import image_size_of
from .report import RUNS_NAME, make_results_dir, own_results_dir, summarize
from .tasks.subsets import SUBSET_DRAW, check_validation, prepare_task
from .zoo import file_sha256


# ------------------------------------------------------------------------------------------------ inputs


#: The most seeds one evaluation runs (each is a full fine-tuning per init and task).
MAX_SEEDS = 1000


def parse_seeds(seeds: "str | int | list[int]") -> list[int]:
    """``3`` -> ``[0, 1, 2]`` (that many seeds); ``"0,4,7"`` -> exactly those (``"7,"``: seed 7 alone)."""
    if isinstance(seeds, (list, tuple)):
        values = list(seeds)
    elif isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError(f"--seeds {seeds}: a number of seeds is from 1 to {MAX_SEEDS}; to run one seed with a "
                              f"large value, write it as a list: --seeds {seeds},")
        values = list(range(seeds))
    else:
        text = str(seeds).strip()
        try:
            values = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds '{seeds}': write a number of seeds (3 = seeds 0,1,2) or a list (0,4,7)") from None
        if "," not in text and values:
            return parse_seeds(values[0])
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**53 for v in values):
        raise ConfigError(f"--seeds {seeds!r}: seeds are integers from 0 to 2**53 - 1")
    if len(values) > MAX_SEEDS:
        raise ConfigError(f"--seeds: {len(values)} seeds; at most {MAX_SEEDS}")
    if len(set(values)) != len(values):
        raise ConfigError(f"--seeds {seeds!r}: a seed is listed twice")
    return values


def _environment(device: str | None) -> dict:
    cuda = torch.cuda.is_available() and str(device or "cuda").startswith("cuda")
    return {
        "ctinit": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


# ------------------------------------------------------------------------------------------------ running


def run_evaluation(inits: list[str], data: list[str], seeds: "str | int | list[int]" = 3,
                   config: FinetuneConfig | None = None, *, revision: str | None = None,
                   max_train_per_class: int | None = None, max_train_samples: int | None = None,
                   device: str | None = None, progress: bool = True, log=None, command: str | None = None,
                   out: str | Path | None = None, validation_fraction: float = 0.1, score: str = "test",
                   workers: "str | int" = "auto") -> dict:
    """Fine-tune every init on every task for every seed (see module doc). Returns the results as plain data.

    All inits are resolved (Hub ids downloaded) and every task spec is read before the first fine-tuning step,
    so a typo fails in a second, not after an hour. ``config.seed`` is ignored: ``seeds`` sets it per run.
    ``config.eval_every == 0`` means a curve point every ``steps // 10`` steps.

    With ``out``, each finished (init, task, seed) run is appended to ``out/runs.jsonl`` at once, and a re-run with
    the same options skips the runs found there (a run is identified by the init's label and weights, the task, the
    seed and the whole recipe): an interrupted evaluation loses at most the run in progress. ``out`` is this
    evaluation's while it runs (:func:`~ctinit.report.own_results_dir`): a second one on it is refused.

    ``workers``: ``auto`` runs the runs side by side in one process per free CPU core where that pays, a number
    asks for that many processes, 1 keeps them in this process (:mod:`ctinit.finetune_runs`).
    """
    with own_results_dir(out) if out is not None else contextlib.nullcontext():
        return _evaluate(inits, data, seeds, config, revision=revision, max_train_per_class=max_train_per_class,
                         max_train_samples=max_train_samples, device=device, progress=progress, log=log,
                         command=command, out=out, validation_fraction=validation_fraction, score=score,
                         workers=workers)


def _evaluate(inits, data, seeds, config, *, revision, max_train_per_class, max_train_samples, device, progress, log,
              command, out, validation_fraction, score, workers) -> dict:
    from tqdm.auto import tqdm

    from .tasks import load_task, parse_spec

    seeds = parse_seeds(seeds)
    check_validation(validation_fraction, score)
    inits = [str(i) for i in inits]
    data = [str(d) for d in data]
    if not inits:
        raise ConfigError("name at least one initialization (--init)")
    if not data:
        raise ConfigError("name at least one task (--data)")
    for what, items in (("--init", inits), ("--data", data)):
        dupes = sorted({i for i in items if items.count(i) > 1})
        if dupes:
            raise ConfigError(f"{what} {dupes[0]} is given twice")
    cfg = config or FinetuneConfig()
    if cfg.early_stop and score == "validation":
        raise ConfigError("pick fine-tunes each candidate for a fixed number of steps (--steps N or --epochs E); "
                          "early stopping (--early-stop, --steps auto) is for ctinit finetune and evaluate")
    if cfg.early_stop and not validation_fraction:
        raise ConfigError("early stopping (--early-stop, --steps auto) needs a validation split: --val-fraction "
                          "above 0")
    if cfg.eval_every == 0 and cfg.epochs is None and not cfg.early_stop:
        cfg = dataclasses.replace(cfg, eval_every=max(1, cfg.steps // 10))
    # (with epochs or early stopping, finetune sizes the interval to the task: once per epoch, >= 10 per run)
    cfg = dataclasses.replace(cfg, progress=False)
    for spec in data:
        parse_spec(spec)  # unknown kinds fail before anything is downloaded

    sources: list[InitSource] = []
    entries: list[dict] = []
    for init in inits:
        source = resolve_init(init, revision if _revision_applies(init) else None)
        sources.append(source)
        weights = source.path / WEIGHTS_NAME if (source.path is not None and not source.scratch) else None
        info = init_info(source)
        entries.append({
            "label": init, "scratch": source.scratch, "path": str(source.path) if source.path else None,
            "arch": source.arch, "repo_id": source.repo_id, "revision": source.revision, "commit": source.commit,
            "algorithm": "scratch" if source.scratch else info.get("algorithm"),
            "weights_sha256": file_sha256(weights) if weights is not None and weights.is_file() else None,
        })
    # Each init's config tells its input size. Every task is read once up front (a bad spec or an impossible
    # limited-data subset fails before any training); during the grid only the current task stays in memory.
    sizes = [image_size_of(SimpleNamespace(config=init_config(s))) for s in sources]
    channels = int(getattr(init_config(sources[0]), "num_channels", 3) or 3)  # for the lines on what is done to images
    preloaded: dict[tuple, object] = {}
    tasks_meta, notes = [], []  # notes: what is done to the images, said once per task when every task has loaded
    for spec in data:
        task = load_task(spec, image_size=sizes[0], seed=seeds[0])
        limited, validation = preloaded[(spec, sizes[0], seeds[0])] = prepare_task(
            task, seeds[0], validation_fraction, score, max_train_per_class, max_train_samples)
        notes += task.preprocessing(channels, uses_hflip(cfg, task), cfg.augment)
        tasks_meta.append({"spec": spec, "name": task.name, "num_classes": task.num_classes,
                           "train_size": len(limited.y_train), "test_size": len(limited.y_test),
                           "validation_size": len(limited.y_test) if score == "validation" else
                           len(validation.y_train) if validation is not None else 0})
    preloaded = {k: v for k, v in preloaded.items() if k[0] == data[0]}  # the others are read again when due
    for line in notes if (log or progress) else []:
        (log or _stderr)(line)
    names = [t["name"] for t in tasks_meta]
    for t in tasks_meta:  # two npz files with one stem: tell them apart by spec
        t["display"] = t["name"] if names.count(t["name"]) == 1 else t["spec"]

    done, runs_file = {}, None
    if out is not None:
        runs_file = make_results_dir(out) / RUNS_NAME
        done = _finished_runs(runs_file)
    # hflip None (the task's setting) is left out of the key: runs recorded before the option existed still count
    # the recipe (the seed is set per run; channels_last and progress are how runs execute: runs made either way count)
    finetune_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seed" and k not in EXECUTION_FIELDS}
    finetune_key = run_identity({k: v for k, v in finetune_cfg.items() if not (k == "hflip" and v is None)})
    if validation_fraction or score != "test":  # 0 trains on the whole split, as runs recorded before the option did
        finetune_key["validation"] = [validation_fraction, score]
    if validation_fraction or max_train_per_class or max_train_samples:  # runs on subsets drawn another way differ
        finetune_key["subsets"] = SUBSET_DRAW

    total = len(inits) * len(data) * len(seeds)
    # a run's length is known up front only in steps without early stopping; otherwise the bar counts runs
    per_run = cfg.steps if cfg.epochs is None and not cfg.early_stop else None
    bar = tqdm(total=total * (per_run or 1), desc="evaluate", unit="step" if per_run else "run",
               disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    jobs, runs, keys = [], {}, {}  # runs and keys by the run's place in the grid (results keep the grid's order)
    split = (validation_fraction, score, max_train_per_class, max_train_samples)
    for spec in data:
        for seed in seeds:
            for entry, source, size in zip(entries, sources, sizes):
                index = len(keys)
                keys[index] = _run_key(entry, spec, seed, finetune_key, max_train_per_class, max_train_samples)
                if keys[index] in done and _channels_last_matches(cfg.channels_last, done[keys[index]]):
                    # finished by an earlier, interrupted evaluation with the same options
                    runs[index] = {k: v for k, v in done[keys[index]].items() if k != "key"}
                    bar.update(per_run or 1)
                else:
                    jobs.append(RunJob(index, entry["label"], source, spec, size, seed,
                                       dataclasses.replace(cfg, seed=seed), split))
    n_workers, threads, why = plan_workers(workers, len(jobs), cfg, device)
    if n_workers > 1 and (log or progress):
        (log or _stderr)(f"evaluate: {len(jobs)} runs on {why}, {threads} thread{'s' if threads != 1 else ''} each")
    display = {t["spec"]: t["display"] for t in tasks_meta}
    start = time.perf_counter()
    try:
        for job, record in run_jobs(jobs, n_workers, threads, device, preloaded=preloaded,
                                    on_step=(lambda _s: bar.update(1)) if per_run and n_workers == 1 else None):
            runs[job.index] = record
            if per_run and n_workers > 1:
                bar.update(per_run)
            elif not per_run:
                bar.update(1)
            bar.set_postfix_str(f"{display[job.spec]} | seed {job.seed} | {job.label}")
            if runs_file is not None:
                _append_line(runs_file, {"key": keys[job.index], **record})
            if log:
                scored = "validation" if score == "validation" else "test"  # pick scores on validation
                log(f"{display[job.spec]} | {job.label} | seed {job.seed}: {scored} accuracy "
                    f"{record['test_accuracy']:.4f}")
    finally:
        bar.close()
    results = {
        "ctinit_version": __version__,
        "command": command,
        "environment": _environment(device),
        "seconds": time.perf_counter() - start,
        "seeds": seeds,
        "finetune": finetune_cfg,
        "channels_last": cfg.channels_last,
        "max_train_per_class": max_train_per_class,
        "max_train_samples": max_train_samples,
        "validation_fraction": validation_fraction,
        "score": score,
        "inits": entries,
        "tasks": tasks_meta,
        "runs": [runs[i] for i in sorted(runs)],
    }
    results["summary"] = summarize(results)
    return results


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_key(entry: dict, spec: str, seed: int, finetune_cfg: dict, max_train_per_class, max_train_samples) -> str:
    identity = {"init": entry["label"], "weights": entry.get("weights_sha256"), "commit": entry.get("commit"),
                "task": spec, "seed": seed, "finetune": finetune_cfg, "max_train_per_class": max_train_per_class,
                "max_train_samples": max_train_samples}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _channels_last_matches(setting, run: dict) -> bool:
    """Whether a finished run may stand for one with this ``channels_last`` setting: ``auto`` takes any; a fixed
    memory format (set for bitwise reproducibility) only runs made in it (runs recorded before the option:
    contiguous)."""
    return setting == "auto" or bool(run.get("channels_last", False)) is bool(setting)


def _finished_runs(path: Path) -> dict[str, dict]:
    """Runs recorded by an earlier evaluation into the same folder; a line cut short by a kill is ignored."""
    records = read_jsonl(path)[0] if path.is_file() else []
    return {r["key"]: r for _, r in records if isinstance(r, dict) and isinstance(r.get("key"), str)}


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _revision_applies(init: str) -> bool:
    """Whether ``--revision`` applies to this init: a Hub id (not an existing local directory) without its own @REV."""
    from .hubio.names import HUB_PREFIX, parse_hub_id

    target = init[len("scratch:"):] if init.startswith("scratch:") else init
    parsed = parse_hub_id(target)
    return parsed is not None and parsed[1] is None and (target.startswith(HUB_PREFIX) or not Path(target).exists())



__all__ = ["MAX_SEEDS", "parse_seeds", "run_evaluation"]
