"""ctinit: meta-learned shared initializations with Continual Trajectory Shifting (Shin et al., ICML 2021).

``import ctinit`` registers the ctinit backbones with transformers' ``AutoConfig``/``AutoModel`` (when transformers
is imported: ``import ctinit`` itself imports neither torch nor transformers, see :mod:`ctinit.autoregister`).

    model = ctinit.from_pretrained("zoo:NAME", num_classes=10)   # a shipped initialization (`ctinit list`)
    model = ctinit.from_pretrained("ORG/NAME", num_classes=10)   # or a Hub id, a local export / run directory
    folder = ctinit.zoo.path("NAME")                             # transformers.AutoModel.from_pretrained(folder)
"""
from __future__ import annotations

from .version import __version__
from . import autoregister, zoo  # noqa: F401  (zoo: the shipped initializations, ctinit.zoo.path(NAME); stdlib only)
from .errors import CtinitError

autoregister.install()  # the backbones are registered with the Auto classes as soon as transformers is imported

#: Names imported on first use (they import torch and transformers): ``ctinit --help`` answers without them.
_FROM_MODELS = ("ImageClassifier", "TaskHead", "backbone_config", "build_backbone")


def __getattr__(name: str):
    if name == "models" or name in _FROM_MODELS:
        import importlib

        models = importlib.import_module(".models", __name__)
        return models if name == "models" else getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def from_pretrained(init, num_classes: int | None = None, revision: str | None = None, seed: int | None = None):
    """An :class:`ImageClassifier` ready to fine-tune: the backbone at ``init`` (a local directory, a Hub id
    ``ORG/NAME[@REVISION]`` resolved through the Hugging Face cache, ``zoo:NAME`` shipped in the package, or
    ``scratch:...``) and a fresh head for
    ``num_classes`` classes (None/0: no head; fine-tuning adds one sized to the task). See
    :func:`ctinit.loading.from_pretrained`."""
    from .loading import from_pretrained as _from_pretrained

    return _from_pretrained(init, num_classes=num_classes, revision=revision, seed=seed)


__all__ = ["CtinitError", "ImageClassifier", "TaskHead", "__version__", "backbone_config", "build_backbone",
           "from_pretrained", "models", "zoo"]
