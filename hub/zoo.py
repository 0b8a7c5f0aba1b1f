"""The zoo's cards and publishing.

An entry's card (``ctinit/zoo/weights/NAME/README.md``) is rendered from its registry entry with the same engine as
every export's card (``ctinit/hubio/templates/initialization.md``): how it was made, how to use it by name, and the measured table
(paired difference against scratch of the same architecture, with its 95% interval and seeds), saying plainly where
it does not beat scratch. ``ctinit-hub push-zoo --org ORG`` pushes every entry as a Hub model repo (weights, config,
image processor config, card, recipe) through the one push path (:func:`ctinit.hubio.push_folder`).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ctinit import zoo
from ctinit.catalog import recipes_dir
from ctinit.errors import ConfigError
from ctinit.hubio import CONFIG_NAME, WEIGHTS_NAME, parse_hub_id
from ctinit.loading import load_init, read_config
from ctinit.models import is_ctinit_config
from ctinit.stats import BETTER, WORSE, format_difference

from .card import public_spec, render_init_card, replace_results_section

REPO = Path(__file__).resolve().parent.parent


def recipe_file(entry: dict) -> Path | None:
    """The recipe that made the entry: ``training/recipes/zoo/NAME.yaml`` in a checkout, else the installed copy."""
    recipe = entry.get("recipe")
    if not recipe:
        return None
    candidates = [REPO / recipe]
    folder = recipes_dir()
    if folder is not None and recipe.startswith("training/recipes/"):
        candidates.append(folder / recipe[len("training/recipes/"):])
    return next((p for p in candidates if p.is_file()), None)


def _table(results: list[dict], opponent: str) -> list[str]:
    lines = [f"| evaluation | tasks | train examples per class | steps | seeds | this initialization | {opponent} | "
             "difference (95% interval) | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        tasks = ", ".join(f"`{public_spec(t)}`" for t in r.get("tasks", []))
        per_class = r.get("max_train_per_class") or "all"
        theirs = r.get("against_accuracy", r.get("scratch_accuracy"))
        lines.append(f"| {r['name']} | {tasks} | {per_class} | {_steps_cell(r)} | {r.get('seeds', '?')} | "
                     f"{r['init_accuracy']:.3f} | {theirs:.3f} | {format_difference(r['difference'])} | "
                     f"{r['verdict']} |")
    return lines


def _steps_cell(r: dict) -> str:
    """A fixed budget's steps, or for one fine-tuned to convergence the steps its runs took, how many of the
    opponent's runs stopped early (validation accuracy flat for the patience) and how many are shown converged
    (those, and runs at their maximum whose validation accuracy gained at most a point over the last quarter)."""
    if not str(r.get("budget", "")).startswith("converged"):
        return str(r.get("steps", "?"))
    lo, hi = r["steps_run"]["init"]
    shown = r.get("shown_converged", {}).get("against")
    return (f"to convergence: {lo}-{hi} (opponent stopped early in {r['stopped_early']['against']} runs"
            + (f", shown converged in {shown}" if shown else "") + ")")


def _budget(r: dict) -> str:
    return "fine-tuned to convergence" if str(r.get("budget", "")).startswith("converged") else \
        f"{r.get('steps', '?')} fine-tuning steps"


def _not_better(r: dict, opponent: str) -> str:
    how = f"it is worse than {opponent}" if r["verdict"] == WORSE else "its interval includes 0"
    return (f"**It does not beat {opponent} on {r['name']}, {_budget(r)}**: {how} "
            f"({format_difference(r['difference'])}).")


def counterpart_verdict(entry: dict) -> str | None:
    """The card's first words when the entry has been compared with its multi-task counterpart: whether
    meta-learning beat ordinary pretraining on the same tasks, per evaluation and budget."""
    name = entry.get("counterpart")
    rows = [r for r in entry.get("results") or [] if name and r.get("against") == name]
    if not rows:
        return None
    parts = [f"{format_difference(r['difference'])} ({r['verdict']}) on {r['name']}, {_budget(r)}" for r in rows]
    better = sum(r["verdict"] == BETTER for r in rows)
    lead = ("**Meta-learning beat ordinary pretraining here**" if better == len(rows) else
            f"**Meta-learning beat ordinary pretraining in {better} of these {len(rows)} comparisons, not in all**"
            if better else "**Meta-learning has not been shown better than ordinary pretraining on the same tasks**")
    return (f"{lead}: against its multi-task counterpart `zoo:{name}`, paired per (task, seed) with 95% intervals: "
            + "; ".join(parts) + ". Each is one trained initialization; the ratio study compares the rules over "
            "meta-training seeds.")


def results_section(entry: dict) -> str:
    """The card's measured tables (against its multi-task counterpart first, then against scratch), or "not measured
    yet"; a plain sentence wherever it does not beat its opponent, those against the counterpart first of all."""
    results = entry.get("results") or []
    if not results:
        return ("Not measured yet: no evaluation of this initialization against scratch is recorded, so this card "
                "claims no gain. Measure one on your data with `ctinit pick --data SPEC --inits zoo:"
                f"{entry['name']}`.")
    scratch = [r for r in results if r.get("against", "scratch") == "scratch"]
    others: dict[str, list[dict]] = {}
    for r in results:
        if r.get("against", "scratch") != "scratch":
            others.setdefault(r["against"], []).append(r)
    lines, first = [], []
    for name, rows in others.items():
        first += [_not_better(r, f"`zoo:{name}`") for r in rows if r["verdict"] != BETTER]
        lines += [f"Against `zoo:{name}` (ordinary multi-task pretraining on the same tasks, steps and data), "
                  "paired per (task, seed), with its 95% t-interval:" if name == entry.get("counterpart") else
                  f"Against `zoo:{name}`, paired per (task, seed), with its 95% t-interval:", ""]
        lines += _table(rows, f"`zoo:{name}`") + [""]
    if scratch:
        lines += ["Fine-tuned from this initialization and from scratch (the same architecture, fresh weights) with "
                  "the same recipe, tasks and seeds; the difference is this initialization minus scratch in accuracy "
                  "points, paired per (task, seed), with its 95% t-interval.", ""]
        lines += _table(scratch, "scratch")
        notes = [_not_better(r, "scratch") for r in scratch if r["verdict"] != BETTER]
        lines += [""] + notes if notes else []
    if not others and entry.get("counterpart"):
        first.append(f"Not yet compared with its multi-task counterpart `zoo:{entry['counterpart']}`: whether "
                     "meta-learning beats ordinary pretraining on the same data is not measured for this entry.")
    elif not others and entry.get("algorithm") == "cts":
        first.append("No multi-task counterpart of this entry is shipped yet: whether meta-learning beats ordinary "
                      "pretraining on the same tasks and data is not measured for it.")
    return "\n".join((first + [""] if first else []) + lines).rstrip("\n")


def weights_section(entry: dict) -> str:
    """The weights' metadata as torchvision states it, from the registry (measured by hub/zoo_metadata.py)."""
    minutes = f"{entry['seconds'] / 60:.0f} minutes" if entry.get("seconds") else "unrecorded"
    rows = [("algorithm", f"`{entry.get('algorithm', '?')}`"),
            ("parameters", f"{entry['params']:,}" if entry.get("params") is not None else "?"),
            ("GFLOPs per image", f"{entry.get('gflops')} at {entry.get('channels')}x{entry.get('image_size')}x"
                                 f"{entry.get('image_size')} ({entry.get('flops_counted', '?')})"),
            ("file size", f"{entry.get('size'):,} bytes (`model.safetensors`)" if entry.get("size") else "?"),
            ("licence", f"`{entry.get('license', '?')}`"),
            ("recipe", f"`{entry.get('recipe')}`"), ("training data", entry.get("training_data", "?")),
            ("training time", minutes), ("machine", entry.get("machine") or "unrecorded")]
    if entry.get("counterpart"):
        rows.append(("multi-task counterpart", f"`zoo:{entry['counterpart']}` (same backbone, input size, tasks, "
                                               "steps and data, trained with `algorithm: mtl`)"))
    if entry.get("counterpart_of"):
        rows.append(("counterpart of", f"`zoo:{entry['counterpart_of']}`: ordinary multi-task pretraining on the same "
                                       "tasks, steps and data, for comparison"))
    if entry.get("meta_lr_chosen"):
        rows.append(("its rate", f"meta SGD {entry.get('meta_lr')}: {entry['meta_lr_chosen']}"))
    return "\n".join(["## Weights", "", "| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows])


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def eval_results(entry: dict) -> list:
    """The card's ``model-index``: the mean accuracy of each recorded evaluation (one per evaluation and budget)."""
    from huggingface_hub import EvalResult

    out, seen = [], set()
    for r in entry.get("results") or []:
        key = (r["name"], r.get("budget"))
        if key in seen:
            continue
        seen.add(key)
        out.append(EvalResult(
            task_type="image-classification", task_name="Image classification (fine-tuned from this initialization)",
            # huggingface_hub groups results by (task, dataset type, config, split): the evaluation names its config
            dataset_type="ctinit-evaluation", dataset_name=r["name"], dataset_config=_slug(r["name"]),
            dataset_split=r.get("split", "test"),
            metric_type="accuracy", metric_value=round(r["init_accuracy"], 4),
            metric_name=f"mean {r.get('split', 'test')} accuracy, {r.get('budget')}, {r.get('seeds')} seeds",
            metric_args={"tasks": len(r.get("tasks") or []), "seeds": r.get("seeds"), "steps": r.get("steps"),
                         "max_train_per_class": r.get("max_train_per_class")}))
    return out


def render_zoo_card(entry: dict, repo_id: str | None = None) -> str:
    """The entry's card as text (``repo_id``: the Hub id its snippets name; default the entry's ``hub_id``)."""
    folder = zoo.folder(entry["name"])
    config = read_config(folder)
    info = dict(getattr(config, "ctinit", None) or {})
    backbone = load_init(folder)
    recipe = recipe_file(entry)
    from .export import _public_recipe

    # The shipped card's snippets name a Hub id only once it is published (the registry records its commit); until
    # then they load the zoo entry by name. A card staged for a push (repo_id given) names the repo being pushed.
    published = repo_id or (entry["hub_id"] if entry.get("revision") else None)
    card = render_init_card(config, info, repo_id=published or zoo.PREFIX + entry["name"], model_name=entry["name"],
                       num_parameters=sum(p.numel() for p in backbone.parameters()),
                       recipe_yaml=_public_recipe(recipe.read_text()) if recipe else None,
                       plain_transformers=not is_ctinit_config(config),
                       transformers_ref=None if published else f'ctinit.zoo.path("{entry["name"]}")')
    minutes = f"{entry['seconds'] / 60:.0f} minutes" if entry.get("seconds") else "an unrecorded time"
    if repo_id:  # staged for a push: the card is the repo's own
        hub = ""
    elif entry.get("revision"):
        hub = (f"On the Hub as [{entry['hub_id']}](https://huggingface.co/{entry['hub_id']}) (commit "
               f"`{entry['revision'][:10]}`).")
    else:
        hub = (f"Not on the Hub yet: `{entry['hub_id']}` is the id it will be published under (`ctinit-hub push-zoo`); "
               "until then load it by its zoo name.")
    by_name = (f"Shipped inside ctinit as **`zoo:{entry['name']}`** (works offline): `ctinit finetune --init "
               f"zoo:{entry['name']} --data npz:my_task.npz`, `ctinit.from_pretrained(\"zoo:{entry['name']}\", "
               f"num_classes=N)`, `scratch:zoo:{entry['name']}` for the same architecture with fresh weights. "
               f"Made with `{entry.get('command')}` in {minutes} on {entry.get('machine') or 'an unrecorded machine'}."
               + (f" {hub}" if hub else ""))
    text = card.text
    title_end = text.index("\n", text.index("# ")) + 1
    verdict = counterpart_verdict(entry)
    head = (text[:title_end] + "\n" + (verdict + "\n\n" if verdict else "") + by_name + "\n\n"
            + weights_section(entry) + "\n" + text[title_end:])
    card.text = replace_results_section(head, results_section(entry))
    if entry.get("results"):
        card.data.model_name = entry["name"]
        card.data.eval_results = eval_results(entry)
    return str(card).rstrip("\n") + "\n"


def stage_entry(entry: dict, out: Path, repo_id: str) -> Path:
    """The Hub model repo folder of an entry (its weights checked against the registry first)."""
    from ctinit.models.finetuned_folder import image_processor

    from .export import RECIPE_NAME, _public_recipe

    folder = zoo.verify(entry)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copyfile(folder / name, out / name)
    image_processor(read_config(folder)).save_pretrained(str(out))
    recipe = recipe_file(entry)
    if recipe is not None:
        (out / RECIPE_NAME).write_text(_public_recipe(recipe.read_text()))
    (out / "README.md").write_text(render_zoo_card(entry, repo_id))
    return out


def push_zoo(org: str, *, dry_run: bool = False, private: bool = False, record: bool = False, log=None) -> list[dict]:
    """Push every zoo entry to ``ORG/NAME``; returns ``[{"name", "repo_id", "commit", "url", "files"}]``. ``dry_run``
    stages and checks every folder and uploads nothing; ``record`` writes each repo id and commit into the registry."""
    from ctinit import hubio

    from .remote import check_export, push

    items = zoo.entries()
    if not items:
        raise ConfigError("the zoo is empty: nothing to push (add entries with scripts/zoo.py add)")
    repos = {e["name"]: f"{org}/{e['name']}" for e in items}
    for repo in repos.values():
        parsed = parse_hub_id(repo)
        if parsed is None or parsed[1] is not None:
            raise ConfigError(f"--org {org}: '{repo}' is not a Hub id; pass an organization or user name")
    if not dry_run:
        hubio.check_push(next(iter(repos.values())))  # offline or no token: refused before anything is staged
    pushed = []
    with tempfile.TemporaryDirectory(prefix="ctinit-zoo-") as tmp:
        for entry in items:
            repo = repos[entry["name"]]
            stage = stage_entry(entry, Path(tmp) / entry["name"], repo)
            files = sorted(p.name for p in stage.iterdir())
            if dry_run:
                check_export(stage)
                pushed.append({"name": entry["name"], "repo_id": repo, "commit": None, "url": None, "files": files})
                continue
            info = push(stage, repo, private=private, log=log, overwrite_card=True,
                        commit_message=f"Upload ctinit zoo entry {entry['name']}")
            pushed.append({"name": entry["name"], "repo_id": repo, "commit": getattr(info, "oid", None),
                           "url": str(getattr(info, "commit_url", info)), "files": files})
    if record and not dry_run:
        by_name = {p["name"]: p for p in pushed}
        for entry in items:
            entry["hub_id"], entry["revision"] = by_name[entry["name"]]["repo_id"], by_name[entry["name"]]["commit"]
        zoo.write_entries(items)
    return pushed


__all__ = ["eval_results", "push_zoo", "recipe_file", "render_zoo_card", "results_section", "stage_entry",
           "weights_section"]
