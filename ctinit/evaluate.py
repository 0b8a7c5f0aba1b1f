"""Compare initializations side by side: fine-tune each on each task for each seed, then tabulate and plot.

    results = run_evaluation(["runs/cts/init", "ORG/NAME", "scratch:runs/cts/init"], ["builtin:georgian"],
                             seeds=[0, 1, 2], config=FinetuneConfig(steps=300))
    write_results(results, "runs/eval")          # results.json, results.md, curves.png

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

Putting results into a model card is ``ctinit-hub``'s job (``ctinit-hub export RUN OUT --results EVAL_DIR``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .version import __version__
from .atomic import owned_dir, write_file, write_text
from .errors import ConfigError
from .finetune import FinetuneConfig, finetune
from .jsonl import read_jsonl
from .loading import WEIGHTS_NAME, InitSource, init_config, init_info, load_init, resolve_init
from .models import image_size_of
from .zoo import file_sha256  # noqa: F401 - re-exported (hub cards identify weights by it)

RUNS_NAME = "runs.jsonl"



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


def limit_train_samples(task, max_samples: int, seed: int):
    """A seeded subset of ``max_samples`` training examples, spread over the classes as evenly as possible."""
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ConfigError(f"--max-train-samples must be a positive integer, got {max_samples!r}")
    labels = task.y_train.detach().cpu().numpy()
    if max_samples >= len(labels):
        return task
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(task.num_classes)]
    order: list[int] = []
    for rank in range(max(len(p) for p in per_class)):
        for c in rng.permutation(len(per_class)):
            if rank < len(per_class[c]):
                order.append(int(per_class[c][rank]))
    keep = torch.from_numpy(np.sort(np.array(order[:max_samples], dtype=np.int64)))
    return dataclasses.replace(task, x_train=task.x_train.index_select(0, keep.to(task.x_train.device)),
                               y_train=task.y_train.index_select(0, keep.to(task.y_train.device)),
                               classes=list(task.classes))


def limit_task(task, seed: int, max_train_per_class: int | None = None, max_train_samples: int | None = None):
    if max_train_per_class:
        task = task.subset_train(int(max_train_per_class), seed=seed)
    if max_train_samples:
        task = limit_train_samples(task, int(max_train_samples), seed)
    return task


def _environment(device: str | None) -> dict:
    cuda = torch.cuda.is_available() and str(device or "cuda").startswith("cuda")
    import os

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
                   out: str | Path | None = None, validation_fraction: float = 0.1, score: str = "test") -> dict:
    """Fine-tune every init on every task for every seed (see module doc). Returns the results as plain data.

    All inits are resolved (Hub ids downloaded) and every task spec is read before the first fine-tuning step,
    so a typo fails in a second, not after an hour. ``config.seed`` is ignored: ``seeds`` sets it per run.
    ``config.eval_every == 0`` means a curve point every ``steps // 10`` steps.

    With ``out``, each finished (init, task, seed) run is appended to ``out/runs.jsonl`` at once, and a re-run with
    the same options skips the runs found there (a run is identified by the init's label and weights, the task, the
    seed and the whole recipe): an interrupted evaluation loses at most the run in progress. ``out`` is this
    evaluation's while it runs (:func:`own_out_dir`): a second one on it is refused.
    """
    with own_out_dir(out) if out is not None else contextlib.nullcontext():
        return _evaluate(inits, data, seeds, config, revision=revision, max_train_per_class=max_train_per_class,
                         max_train_samples=max_train_samples, device=device, progress=progress, log=log,
                         command=command, out=out, validation_fraction=validation_fraction, score=score)


def _evaluate(inits, data, seeds, config, *, revision, max_train_per_class, max_train_samples, device, progress, log,
              command, out, validation_fraction, score) -> dict:
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
    if cfg.eval_every == 0:
        cfg = dataclasses.replace(cfg, eval_every=max(1, cfg.steps // 10))
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
    preloaded: dict[tuple, object] = {}
    tasks_meta = []
    for spec in data:
        task = preloaded[(spec, sizes[0], seeds[0])] = load_task(spec, image_size=sizes[0], seed=seeds[0])
        limited, validation = prepare_task(task, seeds[0], validation_fraction, score, max_train_per_class,
                                           max_train_samples)
        tasks_meta.append({"spec": spec, "name": task.name, "num_classes": task.num_classes,
                           "train_size": len(limited.y_train), "test_size": len(limited.y_test),
                           "validation_size": len(limited.y_test) if score == "validation" else
                           len(validation.y_train) if validation is not None else 0})
    preloaded = {k: v for k, v in preloaded.items() if k[0] == data[0]}  # the others are read again when due
    names = [t["name"] for t in tasks_meta]
    for t in tasks_meta:  # two npz files with one stem: tell them apart by spec
        t["display"] = t["name"] if names.count(t["name"]) == 1 else t["spec"]

    done, runs_file = {}, None
    if out is not None:
        runs_file = check_out_dir(out, create=True) / RUNS_NAME
        done = _finished_runs(runs_file)
    # hflip None (the task's setting) is left out of the key: runs recorded before the option existed still count
    finetune_key = {k: v for k, v in dataclasses.asdict(cfg).items()
                    if k not in ("seed", "progress") and not (k == "hflip" and v is None)}
    if validation_fraction or score != "test":  # 0 trains on the whole split, as runs recorded before the option did
        finetune_key["validation"] = [validation_fraction, score]

    total = len(inits) * len(data) * len(seeds)
    bar = tqdm(total=total * cfg.steps, desc="evaluate", unit="step", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    runs = []
    start = time.perf_counter()
    try:
        for spec, meta in zip(data, tasks_meta):
            for seed in seeds:
                tasks = {}
                for entry, source, size in zip(entries, sources, sizes):
                    if size not in tasks:
                        raw = preloaded.pop((spec, size, seed), None) or load_task(spec, image_size=size, seed=seed)
                        tasks[size] = prepare_task(raw, seed, validation_fraction, score, max_train_per_class,
                                                   max_train_samples)
                    task, validation = tasks[size]
                    bar.set_postfix_str(f"{meta['display']} | seed {seed} | {entry['label']}")
                    key = _run_key(entry, spec, seed, finetune_key, max_train_per_class, max_train_samples)
                    if key in done:  # finished by an earlier, interrupted evaluation with the same options
                        runs.append({k: v for k, v in done[key].items() if k != "key"})
                        bar.update(cfg.steps)
                        continue
                    backbone = load_init(source, seed=seed)
                    result = finetune(backbone, task, dataclasses.replace(cfg, seed=seed), device=device,
                                      on_step=lambda _s: bar.update(1), validation=validation)
                    runs.append({"init": entry["label"], "task": spec, "seed": seed,
                                 "test_accuracy": result.test_accuracy, "test_loss": result.test_loss,
                                 "train_loss": result.train_loss, "train_size": len(task.y_train),
                                 "curve": [[int(s), float(a)] for s, a in result.curve], "seconds": result.seconds})
                    if runs_file is not None:
                        _append_line(runs_file, {"key": key, **runs[-1]})
                    if log:
                        log(f"{meta['display']} | {entry['label']} | seed {seed}: test accuracy {result.test_accuracy:.4f}")
    finally:
        bar.close()
    finetune_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("seed", "progress")}
    results = {
        "ctinit_version": __version__,
        "command": command,
        "environment": _environment(device),
        "seconds": time.perf_counter() - start,
        "seeds": seeds,
        "finetune": finetune_cfg,
        "max_train_per_class": max_train_per_class,
        "max_train_samples": max_train_samples,
        "validation_fraction": validation_fraction,
        "score": score,
        "inits": entries,
        "tasks": tasks_meta,
        "runs": runs,
    }
    results["summary"] = summarize(results)
    return results


#: What an evaluation writes into its --out folder.
RESULT_FILES = (RUNS_NAME, "results.json", "results.md", "curves.png")


def _written_by_evaluate(folder: Path) -> bool:
    """Whether ``folder`` holds an evaluation's records: a results.json of ``ctinit evaluate`` or a runs.jsonl
    whose records are its runs."""
    if (folder / "results.json").is_file():
        try:
            load_results(folder)
            return True
        except ConfigError:
            return False
    if (folder / RUNS_NAME).is_file():
        records = read_jsonl(folder / RUNS_NAME)[0]
        return all(isinstance(r, dict) and isinstance(r.get("key"), str) for _, r in records)
    return False


def check_validation(fraction: float, score: str) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"--val-fraction must be at least 0 and below 1, got {fraction!r}")
    if score not in ("test", "validation"):
        raise ConfigError(f"score must be 'test' or 'validation', got {score!r}")
    if score == "validation" and not fraction:
        raise ConfigError("scoring on the validation split needs a validation fraction above 0")


def prepare_task(task, seed: int, validation_fraction: float, score: str = "test", max_train_per_class=None,
                 max_train_samples=None):
    """``(task to fine-tune, validation part or None)``: the validation split carved from the full training split
    (seeded, per class), then the limited-data subset drawn from the rest. ``score="validation"``: the returned
    task's test split IS the validation split (its real test split is dropped, never read)."""
    validation = None
    if validation_fraction:
        task, validation = task.split_train(validation_fraction, seed)
    task = limit_task(task, seed, max_train_per_class, max_train_samples)
    if score == "validation":
        return dataclasses.replace(task, x_test=validation.x_train, y_test=validation.y_train), None
    return task, validation


def check_out_dir(out: str | Path, create: bool = False) -> Path:
    """The results folder, checked (and with ``create``, made and probed) before the first fine-tuning step: a file,
    an unwritable folder, or one holding files of an evaluation's names that ``ctinit evaluate`` did not write (they
    are the user's) is refused. Other files in the folder are left alone."""
    import os

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder; pass a folder for the results")
    theirs = [name for name in RESULT_FILES if (out / name).exists()]
    if theirs and not _written_by_evaluate(out):
        raise ConfigError(f"--out {out}: holds {', '.join(theirs)} that ctinit evaluate did not write; pass another "
                          "folder for the results")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {parent} is not a writable folder; pass a writable folder for the results")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e}); pass a writable folder") from None
    return out


def own_out_dir(out: str | Path):
    """``with own_out_dir(out):`` holds the results folder for a whole evaluation
    (:func:`ctinit.atomic.owned_dir` with :func:`check_out_dir`)."""
    return owned_dir(out, check_out_dir)


def _run_key(entry: dict, spec: str, seed: int, finetune_cfg: dict, max_train_per_class, max_train_samples) -> str:
    identity = {"init": entry["label"], "weights": entry.get("weights_sha256"), "commit": entry.get("commit"),
                "task": spec, "seed": seed, "finetune": finetune_cfg, "max_train_per_class": max_train_per_class,
                "max_train_samples": max_train_samples}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _finished_runs(path: Path) -> dict[str, dict]:
    """Runs recorded by an earlier evaluation into the same folder; a line cut short by a kill is ignored."""
    records = read_jsonl(path)[0] if path.is_file() else []
    return {r["key"]: r for _, r in records if isinstance(r, dict) and isinstance(r.get("key"), str)}


def _append_line(path: Path, record: dict) -> None:
    import os

    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _revision_applies(init: str) -> bool:
    """Whether ``--revision`` applies to this init: a Hub id (not an existing local directory) without its own @REV."""
    from .loading import HUB_PREFIX, parse_hub_id

    target = init[len("scratch:"):] if init.startswith("scratch:") else init
    parsed = parse_hub_id(target)
    return parsed is not None and parsed[1] is None and (target.startswith(HUB_PREFIX) or not Path(target).exists())


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = float(np.mean(values)) if n else float("nan")
    std = float(np.std(values, ddof=1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "values": [float(v) for v in values]}


def summarize(results: dict) -> dict:
    """``{init: {"tasks": {spec: stats}, "mean": stats}}`` where stats = mean, std (over seeds), n, values."""
    summary = {}
    for entry in results["inits"]:
        label = entry["label"]
        per_task = {}
        by_seed: dict[int, list[float]] = {}
        for task in results["tasks"]:
            runs = [r for r in results["runs"] if r["init"] == label and r["task"] == task["spec"]]
            per_task[task["spec"]] = _stats([r["test_accuracy"] for r in runs])
            for r in runs:
                by_seed.setdefault(r["seed"], []).append(r["test_accuracy"])
        complete = [float(np.mean(v)) for s, v in sorted(by_seed.items()) if len(v) == len(results["tasks"])]
        summary[label] = {"tasks": per_task, "mean": _stats(complete)}
    return summary


# ------------------------------------------------------------------------------------------------ outputs


def _cell(stats: dict, best: bool) -> str:
    if not stats["n"]:
        return "—"
    text = f"{stats['mean']:.3f} ± {stats['std']:.3f}" if stats["n"] > 1 else f"{stats['mean']:.3f}"
    return f"**{text}**" if best else text


def seed_values(results: dict, label: str, spec: str | None = None) -> dict[int, float]:
    """``{seed: accuracy}`` of one init on task ``spec``, or (``spec=None``) its mean over the tasks for every seed
    that ran them all: the values that paired comparisons over seeds take."""
    runs = [r for r in results["runs"] if r["init"] == label and (spec is None or r["task"] == spec)]
    if spec is not None:
        return {r["seed"]: r["test_accuracy"] for r in runs}
    by_seed: dict[int, list[float]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append(r["test_accuracy"])
    return {s: float(np.mean(v)) for s, v in by_seed.items() if len(v) == len(results["tasks"])}


def clear_winner(results: dict, inits: list[str], spec: str | None = None) -> str | None:
    """The init with the best mean whose paired 95% interval (over seeds) against every other init excludes 0;
    None when no init wins that clearly."""
    from .stats import BETTER, paired_difference

    values = {label: seed_values(results, label, spec) for label in inits}
    ran = [label for label in inits if values[label]]
    if len(ran) < 2:
        return None
    best = max(ran, key=lambda label: float(np.mean(list(values[label].values()))))
    clear = all(paired_difference(values[best], values[o])["verdict"] == BETTER for o in ran if o != best)
    return best if clear else None


def results_table(results: dict, labels: dict[str, str] | None = None) -> str:
    """The Markdown table: one row per task plus the average, one column per init (bold: a clear winner, see
    :func:`clear_winner`)."""
    inits = [e["label"] for e in results["inits"]]
    summary = results["summary"]
    heads = [(labels or {}).get(label, f"`{label}`") for label in inits]
    lines = ["| task | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(inits)]
    rows = [(f"{t['display']} ({t['num_classes']} classes, {t['train_size']} train)", t["spec"],
             [summary[label]["tasks"][t["spec"]] for label in inits]) for t in results["tasks"]]
    rows.append(("**mean**", None, [summary[label]["mean"] for label in inits]))
    for name, spec, cells in rows:
        winner = clear_winner(results, inits, spec)
        lines.append(f"| {name} | " + " | ".join(_cell(c, label == winner) for c, label in zip(cells, inits)) + " |")
    return "\n".join(lines)


def recipe_line(results: dict) -> str:
    ft = results["finetune"]
    opt = ft["optimizer"]
    extras = [f"lr {opt.get('lr')}"] + [f"{k} {v}" for k, v in opt.items() if k not in ("name", "lr")]
    limited = []
    if results.get("max_train_per_class"):
        limited.append(f"{results['max_train_per_class']} train examples per class")
    if results.get("max_train_samples"):
        limited.append(f"at most {results['max_train_samples']} train examples")
    seeds = results["seeds"]
    text = (f"Test accuracy after {ft['steps']} fine-tuning steps, mean ± std over {len(seeds)} seed"
            f"{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}); {opt.get('name')} "
            f"({', '.join(extras)}), batch {ft['batch_size']}, lr x{ft['gamma']} at "
            f"{', '.join(f'{int(m * 100)}%' for m in ft['milestones'])} of the steps, "
            f"{_augmentation(ft)}, mixed precision {ft['mixed_precision']}")
    if limited:
        text += "; limited data: " + ", ".join(limited)
    fraction = results.get("validation_fraction")
    if results.get("score") == "validation":
        text = text.replace("Test accuracy", "Validation accuracy", 1)
        text += f"; validation split: {fraction:.0%} of each class's training examples (seeded), test split unused"
    elif fraction:
        text += (f"; the curves are measured on a validation split of {fraction:.0%} of each class's training "
                 "examples (seeded), held out of training")
    return text + ". Bold: beats every other column by a paired 95% interval over seeds that excludes 0."


def _augmentation(finetune_cfg: dict) -> str:
    if not finetune_cfg["augment"]:
        return "no augmentation"
    flip = {True: "random crop and horizontal flip", False: "random crop, no flip"}
    return flip.get(finetune_cfg.get("hflip"), "random crop and horizontal flip where the task allows it")


def machine_line(results: dict, command: bool = True) -> str:
    env = results.get("environment") or {}
    where = env.get("device") if env.get("device") != "cpu" else f"CPU ({env.get('cpu_count')} cores)"
    text = f"Ran on {where}, torch {env.get('torch')}, ctinit {env.get('ctinit')}"
    if results.get("seconds") is not None:
        text += f", {results['seconds']:.0f} s"
    if command and results.get("command"):
        text += f": `{results['command']}`"
    return text + "."


def results_markdown(results: dict) -> str:
    return "\n\n".join(["# Fine-tuning evaluation", recipe_line(results), results_table(results),
                        machine_line(results)]) + "\n"


def plot_curves(results: dict, path: str | Path, labels: dict[str, str] | None = None, kept: str | None = None) -> Path:
    """Test accuracy against fine-tuning step: one panel per task, per init a mean line and a ±std band over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = results["tasks"]
    n = len(tasks)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, task in zip(axes, tasks):
        for entry in results["inits"]:
            curves = [r["curve"] for r in results["runs"] if r["init"] == entry["label"] and r["task"] == task["spec"]]
            if not curves:
                continue
            steps = sorted({s for c in curves for s, _ in c})
            acc = np.array([[dict((s, a) for s, a in c).get(step, np.nan) for step in steps] for c in curves])
            mean = np.nanmean(acc, axis=0)
            label = (labels or {}).get(entry["label"], entry["label"])
            line, = ax.plot(steps, mean, label=label, marker="o" if len(steps) < 3 else None)
            if len(curves) > 1:
                std = np.nanstd(acc, axis=0, ddof=1)
                ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(f"{task['display']} ({task['num_classes']} classes)")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 3), fontsize="small", frameon=False)
    seeds = len(results["seeds"])
    fig.suptitle(f"test accuracy while fine-tuning (mean{' ± std' if seeds > 1 else ''} over {seeds} seed"
                 f"{'s' if seeds != 1 else ''})", fontsize="medium")
    fig.tight_layout(rect=(0, 0.06 + 0.02 * ((len(names) - 1) // 3), 1, 0.95))
    return write_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), kept=kept)  # never half a PNG


def write_results(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``curves.png`` into ``out_dir`` (held while writing; each file
    whole or not at all). A failed write is one line saying what is kept: the finished runs in ``runs.jsonl``."""
    out = Path(out_dir)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "curves.png"}
    with own_out_dir(out):
        kept = (f"{out / RUNS_NAME} keeps the finished runs (rerun the same command to write the results; it does "
                "not repeat them)" if (out / RUNS_NAME).is_file() else f"{out} has no earlier results of this evaluation")
        write_text(paths["json"], json.dumps(results, indent=1) + "\n", kept=kept)
        write_text(paths["md"], results_markdown(results), kept=kept)
        plot_curves(results, paths["png"], kept=kept)
    return paths


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` written by :func:`write_results` (a path to the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no such results file; run `ctinit evaluate ... --out DIR` first")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(results, dict) or not {"inits", "tasks", "runs"} <= set(results):
        raise ConfigError(f"{path}: not a results file of `ctinit evaluate`")
    results.setdefault("summary", summarize(results))
    return results


__all__ = [
    "limit_train_samples", "load_results", "parse_seeds", "plot_curves", "results_markdown", "results_table",
    "run_evaluation", "summarize", "write_results",
]
