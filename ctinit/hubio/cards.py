"""What a published card says: the paper, license identifiers the Hub accepts (and the default one a model's data
allow), the Hub datasets behind task specs, the install line, and the one card engine: :func:`render_card` fills a
jinja2 template (``templates/*.md`` beside this module, or a file the publisher passes) through
``huggingface_hub.ModelCard.from_template``. Initializations (``ctinit_hub.card``) and fine-tuned classifiers
(:mod:`ctinit.models.finetuned_folder`) both go through it."""
from __future__ import annotations

import difflib
import re
from pathlib import Path

from ..errors import ConfigError

#: The paper, linked from every card.
ARXIV_ID = "2102.07215"
ARXIV_URL = f"https://arxiv.org/abs/{ARXIV_ID}"
#: The Hub id written into a card made without a repo id; pushing fills in the real one (in the uploaded copy).
PLACEHOLDER_ORG = "YOUR-ORG"
PLACEHOLDER = re.compile(rf"{PLACEHOLDER_ORG}/[A-Za-z0-9_.-]+")

#: The license identifiers the Hub accepts in a card's ``license:`` field. Source: the table in
#: https://github.com/huggingface/hub-docs/blob/main/docs/hub/repositories-licenses.md (commit 008d54d, read
#: 2026-11-29), plus the llama3* entries added by huggingface/hub-docs PR #1619.
HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc",
    "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa",
    "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1", "llama3.2",
    "llama3.3", "gemma", "unknown", "other",
)

#: Task specs whose data is a Hub dataset (``hf:NAME`` specs name theirs directly). The one mapping behind a card's
#: ``datasets:`` list and its ``model-index`` entries.
KNOWN_DATASETS = {"builtin:fashion-mnist": "zalando-datasets/fashion_mnist"}


def check_license(license: str) -> str:
    """``license`` if the Hub knows it (case-insensitive), else a ConfigError listing the closest identifiers."""
    value = str(license).strip().lower()
    if value in HUB_LICENSES:
        return value
    close = difflib.get_close_matches(value, HUB_LICENSES, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "e.g. apache-2.0, mit, cc-by-4.0, or other"
    raise ConfigError(f"--license {license!r}: not a Hub license identifier; {hint} (the list: "
                      f"https://huggingface.co/docs/hub/repositories-licenses)")


#: The data of the bundled glyph suite (ctinit/data/builtin/LICENSES.md): permissive licenses.
GLYPH_SUITE_DATA = "Fashion-MNIST (MIT License) and renders of the Noto fonts (SIL Open Font License 1.1)"


def card_license(license: str | None, specs: list[str]) -> tuple[str, str]:
    """The ``license:`` of a card for a model made from the task ``specs``, and a sentence for the card saying where
    it comes from (empty for a license given: the publisher's choice, checked). Without one, a model made only from the
    bundled glyph suite (permissive data) gets ctinit's own apache-2.0; anything else gets ``other``: ctinit does
    not know the terms of the user's data, and the colour suite's sources include GPL and CC-BY-SA files
    (ctinit/data/colour/LICENSES.md)."""
    if license is not None:
        return check_license(license), ""
    specs = [str(s) for s in specs]
    if specs and all(s.startswith("builtin:") and not s.startswith("builtin:colour-") for s in specs):
        return "apache-2.0", (f"The license is ctinit's default for models made only from its bundled glyph suite, "
                              f"whose data are {GLYPH_SUITE_DATA}.")
    return "other", ("No license was chosen: this model was trained on data whose terms ctinit does not know (the "
                     "publisher's own data, a dataset, or ctinit's bundled colour suite, whose sources include GPL "
                     "and CC-BY-SA files), so its license is `other` until the publisher sets one (`--license`).")


def dataset_id(spec: str) -> str | None:
    """The Hub dataset behind a task spec, or None for local data (a path says nothing to a card's reader)."""
    spec = str(spec)
    if spec.startswith("hf:"):
        name = spec[3:].split(":")[0]
        return None if (not name or Path(name).exists() or name.startswith((".", "/", "~"))) else name
    return KNOWN_DATASETS.get(spec)


#: A card's install line while ctinit has no public repository and is not on PyPI: true, if not one command.
UNPUBLISHED_INSTALL = "pip install ./ctinit  # a clone or wheel of ctinit: it is not on PyPI yet"


def install_line() -> str:
    """How a card's reader installs ctinit, from the package metadata (``[project.urls]`` of pyproject.toml): from
    the repository once it names one, else :data:`UNPUBLISHED_INSTALL` (``pip install ctinit`` would install
    nothing, or someone else's package)."""
    from importlib import metadata

    try:
        meta = metadata.metadata("ctinit")
    except metadata.PackageNotFoundError:
        return UNPUBLISHED_INSTALL
    urls = {}
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        urls[label.strip().lower()] = url.strip()
    repo = urls.get("repository") or urls.get("source")
    return f'pip install "ctinit @ git+{repo}"' if repo else UNPUBLISHED_INSTALL


#: The card templates shipped with ctinit: ``initialization.md`` (an exported initialization) and
#: ``classifier.md`` (a fine-tuned classifier).
TEMPLATES = Path(__file__).resolve().parent / "templates"


def template_path(template: str | Path) -> Path:
    """A shipped template by name (``initialization``, ``classifier``) or a template file the publisher wrote."""
    shipped = TEMPLATES / f"{template}.md"
    path = shipped if shipped.is_file() else Path(template)
    if not path.is_file():
        raise ConfigError(f"{template}: no card template; pass --template PATH (a jinja2 file such as "
                          f"{TEMPLATES.name}/initialization.md in ctinit's package)")
    return path


def render_card(template: str | Path, card_data, **context):
    """The ``huggingface_hub.ModelCard`` of ``card_data`` (a ``ModelCardData``: the YAML header) and ``template``
    filled with ``context`` (every template also gets ``arxiv_url`` and ``install_line``)."""
    from huggingface_hub import ModelCard

    context = {"arxiv_url": ARXIV_URL, "install_line": install_line(), **context}
    return ModelCard.from_template(card_data, template_path=str(template_path(template)), **context)


__all__ = ["ARXIV_ID", "ARXIV_URL", "GLYPH_SUITE_DATA", "HUB_LICENSES", "KNOWN_DATASETS", "PLACEHOLDER",
           "PLACEHOLDER_ORG", "TEMPLATES", "UNPUBLISHED_INSTALL", "card_license", "check_license", "dataset_id", "install_line",
           "render_card", "template_path"]
