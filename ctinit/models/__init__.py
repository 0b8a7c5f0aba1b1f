"""Backbones (registered with transformers' Auto classes on import) and task heads."""
from __future__ import annotations

from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from ..errors import ConfigError
from .backbones import CtinitConvNetModel, CtinitResNetModel
from .configuration import CtinitConvNetConfig, CtinitResNetConfig

AutoConfig.register(CtinitResNetConfig.model_type, CtinitResNetConfig, exist_ok=True)
AutoConfig.register(CtinitConvNetConfig.model_type, CtinitConvNetConfig, exist_ok=True)
AutoModel.register(CtinitResNetConfig, CtinitResNetModel, exist_ok=True)
AutoModel.register(CtinitConvNetConfig, CtinitConvNetModel, exist_ok=True)

#: Built-in backbone names -> (config class, fixed config values).
ARCHITECTURES: dict[str, tuple[type[PretrainedConfig], dict]] = {
    "resnet20": (CtinitResNetConfig, {"depth": 20}),
    "resnet32": (CtinitResNetConfig, {"depth": 32}),
    "resnet56": (CtinitResNetConfig, {"depth": 56}),
    "convnet4": (CtinitConvNetConfig, {"num_layers": 4, "hidden_size": 64}),
    "convnet4-32": (CtinitConvNetConfig, {"num_layers": 4, "hidden_size": 32}),
}


def backbone_config(arch: str, image_size: int = 28, **overrides) -> PretrainedConfig:
    """The config of a built-in backbone by name (``resnet20``, ``resnet32``, ``resnet56``, ``convnet4``...)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown backbone '{arch}': choose one of {', '.join(ARCHITECTURES)}")
    config_class, fixed = ARCHITECTURES[arch]
    return config_class(image_size=image_size, **{**fixed, **overrides})


def build_backbone(arch_or_config: str | PretrainedConfig, image_size: int = 28) -> PreTrainedModel:
    """A freshly initialized backbone from a built-in name or a config."""
    config = arch_or_config if isinstance(arch_or_config, PretrainedConfig) else backbone_config(arch_or_config, image_size)
    return AutoModel.from_config(config)


def feature_dim(backbone: nn.Module) -> int:
    return backbone.config.feature_dim


class TaskHead(nn.Linear):
    """A task-specific linear classifier on the backbone's pooled features; never part of phi."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__(in_features, num_classes)

    @property
    def num_classes(self) -> int:
        return self.out_features


__all__ = [
    "ARCHITECTURES",
    "CtinitConvNetConfig",
    "CtinitConvNetModel",
    "CtinitResNetConfig",
    "CtinitResNetModel",
    "TaskHead",
    "backbone_config",
    "build_backbone",
    "feature_dim",
]
