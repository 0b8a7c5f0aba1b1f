"""The built-in backbone names, without importing torch or transformers (``ctinit list`` shows them).

:data:`ctinit.models.ARCHITECTURES` maps each to its config; ``tests/test_startup.py`` checks that both agree.
"""
from __future__ import annotations

#: ctinit's own backbones (transformers models of their own ``model_type``), then standard transformers ones.
ARCHITECTURE_NAMES = ("resnet20", "resnet32", "resnet56", "convnet4", "convnet4-32", "hf-vit-tiny", "hf-convnext-tiny")

__all__ = ["ARCHITECTURE_NAMES"]
