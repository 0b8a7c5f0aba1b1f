"""Backbones (registered with transformers' Auto classes on import) and task heads.

Built-in backbone names (:data:`ARCHITECTURES`): the ctinit backbones (``resnet20/32/56``, ``convnet4``,
``convnet4-32``: transformers models of their own ``model_type``, registered with ``AutoConfig``/``AutoModel``) and
small standard transformers architectures (``hf-vit-tiny``, ``hf-convnext-tiny``), wrapped by
:class:`~ctinit.models.hf.HFBackbone`, whose initializations load with plain transformers.
"""
from __future__ import annotations

from typing import Callable

from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PretrainedConfig

from ..errors import ConfigError
from .image_classifier import ImageClassifier
from .configuration import CTINIT_MODEL_TYPES, CtinitConvNetConfig, CtinitResNetConfig, is_ctinit_config
from .heads import TaskHead, feature_dim, image_size_of
from .hf import HFBackbone, tiny_convnext_config, tiny_vit_config
from .lazy import lazy_class

# The model classes are imported on first use (see lazy.py): `import ctinit` does not load transformers' modeling code.
_BACKBONES, _CLASSIFIERS = "ctinit.models.backbones", "ctinit.models.for_image_classification"
AutoConfig.register(CtinitResNetConfig.model_type, CtinitResNetConfig, exist_ok=True)
AutoConfig.register(CtinitConvNetConfig.model_type, CtinitConvNetConfig, exist_ok=True)
AutoModel.register(CtinitResNetConfig, lazy_class(_BACKBONES, "CtinitResNetModel", CtinitResNetConfig), exist_ok=True)
AutoModel.register(CtinitConvNetConfig, lazy_class(_BACKBONES, "CtinitConvNetModel", CtinitConvNetConfig), exist_ok=True)
AutoModelForImageClassification.register(
    CtinitResNetConfig, lazy_class(_CLASSIFIERS, "CtinitResNetForImageClassification", CtinitResNetConfig), exist_ok=True)
AutoModelForImageClassification.register(
    CtinitConvNetConfig, lazy_class(_CLASSIFIERS, "CtinitConvNetForImageClassification", CtinitConvNetConfig), exist_ok=True)
_LAZY = {"CtinitResNetModel": _BACKBONES, "CtinitConvNetModel": _BACKBONES,
         "CtinitResNetForImageClassification": _CLASSIFIERS, "CtinitConvNetForImageClassification": _CLASSIFIERS}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: Built-in backbone names -> (config class or factory taking ``image_size=``, fixed config values).
ARCHITECTURES: dict[str, tuple[Callable[..., PretrainedConfig], dict]] = {
    "resnet20": (CtinitResNetConfig, {"depth": 20}),
    "resnet32": (CtinitResNetConfig, {"depth": 32}),
    "resnet56": (CtinitResNetConfig, {"depth": 56}),
    "convnet4": (CtinitConvNetConfig, {"num_layers": 4, "hidden_size": 64}),
    "convnet4-32": (CtinitConvNetConfig, {"num_layers": 4, "hidden_size": 32}),
    # Standard transformers architectures (exports load with plain transformers, without ctinit).
    "hf-vit-tiny": (tiny_vit_config, {}),
    "hf-convnext-tiny": (tiny_convnext_config, {}),
}


def backbone_config(arch: str, image_size: int = 28, **overrides) -> PretrainedConfig:
    """The config of a built-in backbone by name (``resnet20``, ``convnet4``, ``hf-vit-tiny``...)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown backbone '{arch}': choose one of {', '.join(ARCHITECTURES)}")
    config_class, fixed = ARCHITECTURES[arch]
    return config_class(image_size=image_size, **{**fixed, **overrides})



def build_backbone(arch_or_config: str | PretrainedConfig, image_size: int = 28) -> nn.Module:
    """A freshly initialized backbone from a built-in name or a config (a ctinit or a transformers vision config)."""
    config = arch_or_config if isinstance(arch_or_config, PretrainedConfig) else backbone_config(arch_or_config, image_size)
    if is_ctinit_config(config):
        return AutoModel.from_config(config)
    return HFBackbone.from_config(config)


__all__ = [
    "ARCHITECTURES",
    "CTINIT_MODEL_TYPES",
    "CtinitConvNetConfig",
    "CtinitConvNetForImageClassification",
    "CtinitConvNetModel",
    "CtinitResNetConfig",
    "CtinitResNetForImageClassification",
    "CtinitResNetModel",
    "HFBackbone",
    "ImageClassifier",
    "TaskHead",
    "backbone_config",
    "build_backbone",
    "feature_dim",
    "image_size_of",
    "is_ctinit_config",
]
