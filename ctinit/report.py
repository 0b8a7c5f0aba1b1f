"""The report of an evaluation: its results folder (``runs.jsonl`` kept while it runs, then ``results.json``,
``results.md`` and ``curves.png``), the per-init summaries, the Markdown table and the curves plot.

The table reports the test accuracy after the last step as mean ± sample standard deviation over seeds; the average
row takes, for each seed, the mean over tasks, then mean ± std of those over seeds. A cell is bold only when its init
beats every other column by a paired 95% interval (over seeds) that excludes 0 (:func:`clear_winner`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .atomic import check_output_folder, owned_dir, write_file, write_text
from .errors import ConfigError
from .jsonl import read_jsonl

#: The runs an evaluation has finished, one JSON line each (kept across an interruption).
RUNS_NAME = "runs.jsonl"
#: What an evaluation writes into its --out folder.
RESULT_FILES = (RUNS_NAME, "results.json", "results.md", "curves.png")


# ------------------------------------------------------------------------------------------------ the results folder


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


def check_results_dir(out: str | Path) -> Path:
    """The results folder, checked before the first fine-tuning step (:func:`ctinit.atomic.check_output_folder`): a
    file, an unwritable folder, or one holding files of an evaluation's names that ``ctinit evaluate`` did not write
    (they are the user's) is refused. Other files in the folder are left alone."""
    return check_output_folder(out, ours=RESULT_FILES, written_by_us=_written_by_evaluate,
                               theirs="ctinit evaluate did not write; pass another folder for the results")


def make_results_dir(out: str | Path) -> Path:
    """Make the (checked) results folder and probe that a file can be written there, before the first step."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e}); pass a writable folder") from None
    return out


def own_results_dir(out: str | Path):
    """``with own_results_dir(out):`` holds the results folder for a whole evaluation
    (:func:`ctinit.atomic.owned_dir` with :func:`check_results_dir`)."""
    return owned_dir(out, check_results_dir)


# ------------------------------------------------------------------------------------------------ summaries


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
    text = (f"Test accuracy after {_length(ft)}, mean ± std over {len(seeds)} seed"
            f"{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}); {opt.get('name')} "
            f"({', '.join(extras)}), batch {ft['batch_size']}, {_schedule(ft)}, "
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


def _length(ft: dict) -> str:
    """How long each run fine-tuned (results recorded before epochs and early stopping existed have neither)."""
    text = f"{ft['epochs']:g} epochs" if ft.get("epochs") is not None else f"{ft['steps']} fine-tuning steps"
    if ft.get("early_stop"):
        text = (f"at most {text}, stopped when validation accuracy had not improved for {ft['early_stop']} "
                "evaluations (best weights kept)")
    return text


def _schedule(ft: dict) -> str:
    warmup = f"{ft['warmup']:.0%} warm-up, " if ft.get("warmup") else ""
    if ft.get("schedule") == "cosine":
        text = warmup + "cosine decay to 0"
    else:
        text = warmup + f"lr x{ft['gamma']} at {', '.join(f'{int(m * 100)}%' for m in ft['milestones'])} of the steps"
    return text + (f", label smoothing {ft['label_smoothing']:g}" if ft.get("label_smoothing") else "")


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


def curve_split(results: dict) -> str:
    """Which split the curves were measured on: ``"validation"`` where one was held out of training (or scored on),
    else ``"test"`` (``--val-fraction 0``, and results recorded before the option existed)."""
    return "validation" if results.get("score") == "validation" or results.get("validation_fraction") else "test"


def plot_curves(results: dict, path: str | Path, labels: dict[str, str] | None = None, kept: str | None = None) -> Path:
    """Write :func:`curves_figure` as a PNG at ``path`` (whole or not at all)."""
    fig = curves_figure(results, labels)
    return write_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), kept=kept)  # never half a PNG


def curves_figure(results: dict, labels: dict[str, str] | None = None):
    """Accuracy on the split the curves were measured on (:func:`curve_split`) against fine-tuning step: one panel
    per task, per init a mean line and a ±std band over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    split = curve_split(results)
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
        ax.set_ylabel(f"{split} accuracy")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 3), fontsize="small", frameon=False)
    seeds = len(results["seeds"])
    fig.suptitle(f"{split} accuracy while fine-tuning (mean{' ± std' if seeds > 1 else ''} over {seeds} seed"
                 f"{'s' if seeds != 1 else ''})", fontsize="medium")
    fig.tight_layout(rect=(0, 0.06 + 0.02 * ((len(names) - 1) // 3), 1, 0.95))
    return fig


def write_results(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``curves.png`` into ``out_dir`` (held while writing; each file
    whole or not at all). A failed write is one line saying what is kept: the finished runs in ``runs.jsonl``."""
    out = Path(out_dir)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "curves.png"}
    with own_results_dir(out):
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
    "RESULT_FILES", "RUNS_NAME", "check_results_dir", "clear_winner", "load_results", "machine_line",
    "curve_split", "curves_figure", "make_results_dir", "own_results_dir", "plot_curves", "recipe_line",
    "results_markdown", "results_table",
    "seed_values", "summarize", "write_results",
]
