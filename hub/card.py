"""Render an initialization's model card through ctinit's one card engine (:func:`ctinit.hubio.cards.render_card`:
the jinja2 template ``ctinit/hubio/templates/initialization.md`` or the publisher's ``--template``) from its metadata
(``huggingface_hub.ModelCardData``), and edit the results section of a card."""
from __future__ import annotations

import copy
from pathlib import Path

from ctinit.atomic import write_text
from ctinit.errors import CheckpointError, ConfigError
from ctinit.report import curve_split, machine_line, plot_curves, recipe_line, results_table, summarize
from ctinit.zoo import file_sha256
from ctinit.hubio import CONFIG_NAME, WEIGHTS_NAME
from ctinit.hubio.cards import TEMPLATES, card_license, dataset_id
from ctinit.hubio.cards import render_card

RESULTS_START = "<!-- ctinit:results -->"
RESULTS_END = "<!-- /ctinit:results -->"

#: The default template of an initialization's card (installed with ctinit).
TEMPLATE = TEMPLATES / "initialization.md"

ALGORITHM_NAMES = {
    "cts": "Continual Trajectory Shifting (CTS)",
    "reptile": "Reptile",
    "fomaml-cts": "first-order MAML with Continual Trajectory Shifting",
    "fomaml": "first-order MAML (held-out gradient after every inner step)",
    "fomaml-k": "first-order MAML (one held-out gradient per K-step trajectory)",
    "leap": "Leap",
    "mtl": "multi-task learning (joint training, separate heads)",
    "scratch": "no meta-training (the initialization it started from)",
}
BASE_TAGS = ["ctinit", "meta-learning", "continual-trajectory-shifting", "image-feature-extraction"]


def card_datasets(tasks: list[dict]) -> list[str]:
    """The Hub datasets behind the tasks (:func:`ctinit.hubio.dataset_id`, the mapping model-index uses too)."""
    out = []
    for t in tasks:
        name = dataset_id(str(t.get("spec", "")))
        if name and name not in out:
            out.append(name)
    return out


def _optimizer(value) -> str:
    if not isinstance(value, dict):
        return str(value)
    rest = ", ".join(f"{k} {v}" for k, v in value.items() if k != "name")
    return f"{value.get('name', '?')} ({rest})" if rest else str(value.get("name", "?"))


def settings_rows(info: dict, config) -> list[tuple[str, str]]:
    """The card's 'how it was made' rows from the config's ``ctinit`` entry."""
    recipe = info.get("config") or {}
    algorithm = info.get("algorithm", "unknown")
    rows = [("algorithm", f"`{algorithm}`: {ALGORITHM_NAMES.get(algorithm, algorithm)}"),
            ("backbone", f"`{recipe.get('backbone', config.model_type)}` (model_type `{config.model_type}`)"),
            ("meta-training steps", str(info.get("steps", recipe.get("steps", "?"))))]
    labels = [("image_size", "image size"), ("batch_size", "inner batch size"), ("reset_period", "reset period K"),
              ("meta_interval", "meta interval"), ("shift", "trajectory shifting"), ("reset", "reset"),
              ("inner_optimizer", "inner optimizer"), ("meta_optimizer", "meta optimizer"),
              ("max_train_per_class", "train examples per class"), ("augment", "augmentation"),
              ("mixed_precision", "mixed precision")]
    for key, label in labels:
        if key in recipe:
            value = recipe[key]
            if value is None:
                value = "the algorithm's default" if key in ("meta_interval", "shift") else "all"
            rows.append((label, _optimizer(value) if key.endswith("optimizer") else str(value)))
    if info.get("init_from"):
        rows.append(("started from", f"`{info['init_from'].get('spec')}`"))
    rows.append(("seed", str(info.get("seed", recipe.get("seed", "?")))))
    if info.get("world_size"):
        rows.append(("processes", str(info["world_size"])))
    rows.append(("ctinit version", str(info.get("library_version", "?"))))
    return rows


def render_init_card(config, info: dict, *, repo_id: str, num_parameters: int, license: str | None = None,
                     recipe_yaml: str | None = None, results: dict | None = None, results_label: str | None = None,
                     curves: str | None = None, plain_transformers: bool = False,
                     template: str | Path | None = None, model_name: str | None = None,
                     transformers_ref: str | None = None):
    """A ``huggingface_hub.ModelCard`` for an initialization with backbone ``config`` made as ``info`` says; without
    ``license`` the card's license follows the data (:func:`ctinit.hubio.card_license`). ``repo_id`` is what the
    snippets load (a Hub id, or ``zoo:NAME`` for a zoo entry not on the Hub); ``transformers_ref`` the Python
    expression transformers loads it from (default: the quoted ``repo_id``)."""
    from huggingface_hub import ModelCardData

    license, license_note = card_license(license, [t.get("spec", "") for t in (info.get("tasks") or [])])
    tasks = [{**t, "spec": public_spec(t.get("spec", ""))} for t in (info.get("tasks") or [])]  # no local paths
    algorithm = str(info.get("algorithm", "unknown"))
    recipe = info.get("config") or {}
    model_name = model_name or repo_id.split("/")[-1]
    tags = list(dict.fromkeys(BASE_TAGS + [algorithm, config.model_type]))
    # A standard transformers backbone: the Hub shows transformers' snippet; the ctinit tag keeps it in `ctinit list`.
    data = ModelCardData(
        library_name="transformers" if plain_transformers else "ctinit", pipeline_tag="image-feature-extraction",
        license=license, tags=tags, datasets=card_datasets(tasks) or None,
        model_name=model_name if results else None,
        eval_results=card_eval_results(results, results_label) if results else None,
        base_model=(info.get("init_from") or {}).get("repo_id"),  # meta-training started from it (init_from)
    )
    image_size = getattr(config, "image_size", 28)
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    return render_card(
        template or "initialization", data,
        model_name=model_name, repo_id=repo_id, algorithm=algorithm,
        algorithm_name=ALGORITHM_NAMES.get(algorithm, algorithm), backbone=recipe.get("backbone", config.model_type),
        architecture=(getattr(config, "architectures", None) or [config.model_type])[0],
        num_parameters=f"{num_parameters:,}", image_size=image_size, num_channels=getattr(config, "num_channels", 3),
        steps=info.get("steps", recipe.get("steps", "?")), tasks=tasks, settings=settings_rows(info, config),
        recipe_yaml=(recipe_yaml or "").strip(), plain_transformers=plain_transformers,
        transformers_ref=transformers_ref or f'"{repo_id}"', model_type=config.model_type,
        results_section=results_section(results, results_label, curves), license_note=license_note,
    )


# ------------------------------------------------------------------------------------------------ model cards


def public_spec(spec: str) -> str:
    """A task spec as a card may show it: ``npz:``/``folder:`` keep the file's name only, never its path."""
    kind, _, rest = str(spec).partition(":")
    if kind in ("npz", "folder") and rest:
        return f"{kind}:{Path(rest).name}"
    return str(spec)


def public_results(results: dict, this: str | None = None) -> dict:
    """``results`` without local paths or the command line: init labels as :func:`card_label` writes them, local
    task specs by file name; what ``results.json`` next to a card holds and what its curves are drawn from."""
    out = copy.deepcopy(results)
    labels = {e["label"]: card_label(e, this).strip("`") for e in results["inits"]}
    specs = {t["spec"]: public_spec(t["spec"]) for t in results["tasks"]}
    out["command"] = None
    for entry in out["inits"]:
        entry["label"] = labels[entry["label"]]
        entry["path"] = None
    for task in out["tasks"]:
        task["spec"] = specs[task["spec"]]
        if task.get("display") in specs:
            task["display"] = specs[task["display"]]
    for run in out["runs"]:
        run["init"], run["task"] = labels[run["init"]], specs[run["task"]]
    out["summary"] = summarize(out)
    return out


def card_label(entry: dict, this: str | None = None) -> str:
    """A column label for a card: no local paths."""
    if entry["label"] == this:
        return "this initialization"
    if entry.get("repo_id"):
        prefix = "scratch: " if entry["scratch"] else ""
        return f"{prefix}`{entry['repo_id']}`"
    if entry["scratch"]:
        return f"scratch (`{entry['arch']}`)" if entry.get("arch") else "scratch (same architecture)"
    return f"`{Path(entry['label']).name or entry['label']}`"


def results_section(results: dict | None, this: str | None = None, curves: str | None = None) -> str:
    """The card's results section body (between the markers)."""
    if not results:
        return ("Not evaluated yet. Compare it with training from scratch on your tasks, and write the numbers "
                "into this card:\n\n```bash\nctinit evaluate --init . --init scratch:. --data builtin:georgian "
                "--seeds 3 --steps 300 --out eval && ctinit-hub update-card . eval\n```")
    labels = {e["label"]: card_label(e, this) for e in results["inits"]}
    parts = [recipe_line(results), results_table(results, labels)]
    if curves:
        parts.append(f"![{curve_split(results)} accuracy while fine-tuning]({curves})")
    parts.append(machine_line(results, command=False))
    return "\n\n".join(parts)


def card_eval_results(results: dict, this: str) -> list:
    """``huggingface_hub.EvalResult`` entries (the card's ``model-index``) for the init labelled ``this``."""
    from huggingface_hub import EvalResult

    summary = results["summary"][this]
    ft = results["finetune"]
    seeds = results["seeds"]
    out = []
    for task in results["tasks"]:
        stats = summary["tasks"][task["spec"]]
        if not stats["n"]:
            continue
        out.append(EvalResult(
            task_type="image-classification", task_name="Image classification (fine-tuned from this initialization)",
            dataset_type=dataset_id(task["spec"]) or task["name"], dataset_name=task["display"], dataset_split="test",
            metric_type="accuracy", metric_value=round(stats["mean"], 4),
            metric_name=f"test accuracy after {ft['steps']} fine-tuning steps (mean of {len(seeds)} seeds)",
            metric_args={"steps": ft["steps"], "seeds": len(seeds), "std": round(stats["std"], 4),
                         "max_train_per_class": results.get("max_train_per_class"),
                         "max_train_samples": results.get("max_train_samples")},
        ))
    return out


def replace_results_section(text: str, section: str) -> str:
    block = f"{RESULTS_START}\n{section}\n{RESULTS_END}"
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(RESULTS_END):]
    return text.rstrip("\n") + f"\n\n## Results\n\n{block}\n"


def find_init(results: dict, export_dir: str | Path) -> str:
    """The label of the evaluated init whose weights are ``export_dir``'s (same model.safetensors bytes)."""
    export = Path(export_dir)
    weights = export / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{export}: no {WEIGHTS_NAME}; update-card takes an export folder (ctinit-hub export)")
    digest = file_sha256(weights)
    for entry in results["inits"]:
        if not entry["scratch"] and entry.get("weights_sha256") == digest:
            return entry["label"]
    raise ConfigError(f"update-card {export}: none of the evaluated initializations has its weights; "
                      f"evaluate it too (--init {export})")


def update_card(export_dir: str | Path, results: dict, init: str | None = None) -> Path:
    """Write ``results`` of init ``init`` (default: the one whose weights are the export's) into
    ``export_dir/README.md``: the ``model-index`` and the body's results table, plus ``results.json`` and
    ``curves.png`` beside it, both without local paths or the command line. The one way results enter a card:
    ``ctinit-hub export --results`` and ``ctinit-hub update-card`` both call it."""
    import json

    from huggingface_hub import ModelCard

    export = Path(export_dir)
    readme = export / "README.md"
    if not readme.is_file():
        raise ConfigError(f"{export}: no README.md; update-card takes a folder written by `ctinit-hub export`")
    if not (export / CONFIG_NAME).is_file():
        raise ConfigError(f"{export}: no {CONFIG_NAME}; update-card takes a folder written by `ctinit-hub export`")
    this = init if init is not None else find_init(results, export)
    if this not in results["summary"]:
        raise ConfigError(f"update-card: '{this}' is not among the evaluated initializations")
    try:
        card = ModelCard.load(readme)
    except Exception as e:  # noqa: BLE001 - a card that does not parse is bad input
        raise ConfigError(f"{readme}: not a model card with YAML front matter ({type(e).__name__}: {e})") from e
    public = public_results(results, this)
    write_text(export / "results.json", json.dumps(public, indent=1) + "\n")
    plot_curves(public, export / "curves.png")  # drawn again: the evaluation's own legend may name local paths
    curves = "curves.png"
    results, this = public, "this initialization"
    title = next((line[2:].strip() for line in card.text.splitlines() if line.startswith("# ")), None)
    card.data.model_name = card.data.model_name or title or export.resolve().name
    card.data.eval_results = card_eval_results(results, this)
    card.text = replace_results_section(card.text, results_section(results, this, curves))
    write_text(readme, str(card).rstrip("\n") + "\n")  # the card whole or as it was, never half of it
    return readme


__all__ = ["ALGORITHM_NAMES", "TEMPLATE", "card_datasets", "card_eval_results",
           "card_label", "find_init", "public_results", "public_spec", "render_init_card", "replace_results_section",
           "results_section", "update_card"]
