"""ctinit: meta-learned shared initializations with Continual Trajectory Shifting (Shin et al., ICML 2021).

``import ctinit`` registers the ctinit backbones with transformers' ``AutoConfig``/``AutoModel``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import models  # noqa: F401  (registers the backbones with the Auto classes)
from .errors import CtinitError
from .models import TaskHead, backbone_config, build_backbone

__all__ = ["CtinitError", "TaskHead", "__version__", "backbone_config", "build_backbone", "models"]
