"""ctinit: meta-learned shared initializations with Continual Trajectory Shifting (Shin et al., ICML 2021).

``import ctinit`` registers the ctinit backbones with transformers' ``AutoConfig``/``AutoModel``.

    model = ctinit.from_pretrained("zoo:NAME", num_classes=10)   # a shipped initialization (`ctinit list`)
    model = ctinit.from_pretrained("ORG/NAME", num_classes=10)   # or a Hub id, a local export / run directory
    folder = ctinit.zoo.path("NAME")                             # transformers.AutoModel.from_pretrained(folder)
"""
from __future__ import annotations

from .version import __version__
from . import models  # noqa: F401  (registers the backbones with the Auto classes)
from . import zoo  # noqa: F401  (the shipped initializations: ctinit.zoo.path(NAME))
from .errors import CtinitError
from .models import ImageClassifier, TaskHead, backbone_config, build_backbone


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
