"""Configs of the backbones ctinit defines (transformers ``PretrainedConfig`` subclasses)."""
from __future__ import annotations

from transformers import PretrainedConfig


class CtinitResNetConfig(PretrainedConfig):
    """CIFAR-style ResNet (He et al., 2016, Sec. 4.2): 6n+2 layers, three stages of ``widths`` channels.

    ``depth`` 20/32/56 with widths (16, 32, 64) are the backbones of the CTS paper.
    """

    model_type = "ctinit-resnet"

    def __init__(self, depth: int = 20, widths=(16, 32, 64), num_channels: int = 3, image_size: int = 28, **kwargs):
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNet depth must be 6n+2 (20, 32, 56, ...), got {depth}")
        self.depth = depth
        self.widths = list(widths)
        self.num_channels = num_channels
        self.image_size = image_size
        super().__init__(**kwargs)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


class CtinitConvNetConfig(PretrainedConfig):
    """The small ConvNet of few-shot learning (Vinyals et al., 2016): ``num_layers`` x [conv3x3, BN, ReLU, max-pool 2]."""

    model_type = "ctinit-convnet"

    def __init__(self, hidden_size: int = 64, num_layers: int = 4, num_channels: int = 3, image_size: int = 28, **kwargs):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_channels = num_channels
        self.image_size = image_size
        super().__init__(**kwargs)

    @property
    def feature_dim(self) -> int:
        return self.hidden_size


#: model_types defined by ctinit (their models return pooled features themselves).
CTINIT_MODEL_TYPES = (CtinitResNetConfig.model_type, CtinitConvNetConfig.model_type)


def is_ctinit_config(config: PretrainedConfig) -> bool:
    """Whether ``config`` is one of ctinit's own backbones (else a standard transformers architecture)."""
    return getattr(config, "model_type", None) in CTINIT_MODEL_TYPES


def unknown_model_type_advice(model_type: str) -> str | None:
    """What to do when transformers does not know ``model_type`` and it is a ctinit one (None otherwise: then
    transformers' own advice, to upgrade transformers, stands)."""
    if not str(model_type).startswith("ctinit-"):
        return None
    from ..version import __version__

    if model_type in CTINIT_MODEL_TYPES:
        return (f"'{model_type}' is a ctinit model type: `import ctinit` before loading it with transformers "
                "registers it (no trust_remote_code)")
    return (f"'{model_type}' is a ctinit model type that this ctinit ({__version__}; it registers "
            f"{', '.join(CTINIT_MODEL_TYPES)} with transformers on `import ctinit`) does not know: it was saved by "
            "a newer ctinit; upgrade ctinit to load it")

