"""Render an initialization's model card from ``model_cards/template.md`` (a jinja2 template, through
``huggingface_hub.ModelCard.from_template``) and its metadata (``huggingface_hub.ModelCardData``)."""
from __future__ import annotations

import re
from pathlib import Path

from ctinit.errors import ConfigError

def _template_path() -> Path:
    # Installed from a wheel the templates are the subpackage ctinit_hub.model_cards; in a checkout (or an editable
    # install) they are the repository's top-level model_cards/ folder beside hub/.
    here = Path(__file__).resolve().parent
    for folder in (here / "model_cards", here.parent / "model_cards"):
        if (folder / "template.md").is_file():
            return folder / "template.md"
    return here.parent / "model_cards" / "template.md"


TEMPLATE = _template_path()
#: The Hub id written into a card exported without --repo; `push` replaces it with the real id.
PLACEHOLDER_ORG = "YOUR-ORG"
PLACEHOLDER = re.compile(rf"{PLACEHOLDER_ORG}/[A-Za-z0-9_.-]+")

ALGORITHM_NAMES = {
    "cts": "Continual Trajectory Shifting (CTS)",
    "reptile": "Reptile",
    "fomaml-cts": "first-order MAML with Continual Trajectory Shifting",
    "fomaml": "first-order MAML",
    "leap": "Leap",
    "mtl": "multi-task learning (joint training, separate heads)",
    "scratch": "no meta-training (the initialization it started from)",
}
#: Task specs that name a Hugging Face dataset; `hf:NAME` specs name theirs directly.
KNOWN_DATASETS = {"builtin:fashion-mnist": "zalando-datasets/fashion_mnist"}
BASE_TAGS = ["ctinit", "meta-learning", "continual-trajectory-shifting", "image-classification"]


def card_datasets(tasks: list[dict]) -> list[str]:
    out = []
    for t in tasks:
        spec = str(t.get("spec", ""))
        name = spec.partition(":")[2].split(":")[0] if spec.startswith("hf:") else KNOWN_DATASETS.get(spec)
        if name and not Path(name).exists() and name not in out:
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
    rows.append(("seed", str(info.get("seed", recipe.get("seed", "?")))))
    if info.get("world_size"):
        rows.append(("processes", str(info["world_size"])))
    rows.append(("ctinit version", str(info.get("library_version", "?"))))
    return rows


def render_card(config, info: dict, *, repo_id: str, num_parameters: int, license: str = "apache-2.0",
                recipe_yaml: str | None = None, results: dict | None = None, results_label: str | None = None,
                curves: str | None = None, plain_transformers: bool = False, template: str | Path | None = None):
    """A ``huggingface_hub.ModelCard`` for an initialization with backbone ``config`` made as ``info`` says."""
    from huggingface_hub import ModelCard, ModelCardData

    from ctinit.evaluate import card_eval_results, results_section

    template = Path(template) if template else TEMPLATE
    if not template.is_file():
        raise ConfigError(f"{template}: no card template; pass --template PATH (see model_cards/template.md in ctinit's repo)")
    tasks = list(info.get("tasks") or [])
    algorithm = str(info.get("algorithm", "unknown"))
    recipe = info.get("config") or {}
    model_name = repo_id.split("/")[-1]
    tags = list(dict.fromkeys(BASE_TAGS + [algorithm, config.model_type]))
    data = ModelCardData(
        library_name="ctinit", license=license, tags=tags, datasets=card_datasets(tasks) or None,
        model_name=model_name if results else None,
        eval_results=card_eval_results(results, results_label) if results else None,
    )
    image_size = getattr(config, "image_size", 28)
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    return ModelCard.from_template(
        data, template_path=str(template),
        model_name=model_name, repo_id=repo_id, algorithm=algorithm,
        algorithm_name=ALGORITHM_NAMES.get(algorithm, algorithm), backbone=recipe.get("backbone", config.model_type),
        architecture=(getattr(config, "architectures", None) or [config.model_type])[0],
        num_parameters=f"{num_parameters:,}", image_size=image_size, num_channels=getattr(config, "num_channels", 3),
        steps=info.get("steps", recipe.get("steps", "?")), tasks=tasks, settings=settings_rows(info, config),
        recipe_yaml=(recipe_yaml or "").strip(), plain_transformers=plain_transformers,
        results_section=results_section(results, results_label, curves),
    )


__all__ = ["ALGORITHM_NAMES", "PLACEHOLDER", "PLACEHOLDER_ORG", "TEMPLATE", "card_datasets", "render_card"]
