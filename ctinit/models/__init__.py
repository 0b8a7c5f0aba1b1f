"""Backbones (registered with transformers' Auto classes on import) and task heads.

Built-in backbone names (:data:`ARCHITECTURES`): the ctinit backbones (``resnet20/32/56``, ``convnet4``,
``convnet4-32``: transformers models of their own ``model_type``, registered with ``AutoConfig``/``AutoModel``) and
small standard transformers architectures (``hf-vit-tiny``, ``hf-convnext-tiny``), wrapped by
:class:`~ctinit.models.hf.HFBackbone`, whose initializations load with plain transformers.
"""
from __future__ import annotations

from typing import Callable

from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from ..errors import ConfigError
from .backbones import CtinitConvNetModel, CtinitResNetModel
from .classifier import ImageClassifier, TaskHead
from .configuration import CtinitConvNetConfig, CtinitResNetConfig
from .hf import HFBackbone, tiny_convnext_config, tiny_vit_config

AutoConfig.register(CtinitResNetConfig.model_type, CtinitResNetConfig, exist_ok=True)
AutoConfig.register(CtinitConvNetConfig.model_type, CtinitConvNetConfig, exist_ok=True)
AutoModel.register(CtinitResNetConfig, CtinitResNetModel, exist_ok=True)
AutoModel.register(CtinitConvNetConfig, CtinitConvNetModel, exist_ok=True)

#: model_types defined by ctinit (their models return pooled features themselves).
CTINIT_MODEL_TYPES = (CtinitResNetConfig.model_type, CtinitConvNetConfig.model_type)

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


def is_ctinit_config(config: PretrainedConfig) -> bool:
    return getattr(config, "model_type", None) in CTINIT_MODEL_TYPES


def build_backbone(arch_or_config: str | PretrainedConfig, image_size: int = 28) -> nn.Module:
    """A freshly initialized backbone from a built-in name or a config (a ctinit or a transformers vision config)."""
    config = arch_or_config if isinstance(arch_or_config, PretrainedConfig) else backbone_config(arch_or_config, image_size)
    if is_ctinit_config(config):
        return AutoModel.from_config(config)
    return HFBackbone.from_config(config)


def feature_dim(backbone: nn.Module) -> int:
    """Size of the pooled features a backbone returns."""
    dim = getattr(backbone, "feature_dim", None)
    return int(dim if dim is not None else backbone.config.feature_dim)


def image_size_of(backbone: nn.Module, default: int = 28) -> int:
    """The input size a backbone was made for (its config's ``image_size``)."""
    size = getattr(getattr(backbone, "config", None), "image_size", default)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size or default)


__all__ = [
    "ARCHITECTURES",
    "CTINIT_MODEL_TYPES",
    "CtinitConvNetConfig",
    "CtinitConvNetModel",
    "CtinitResNetConfig",
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
