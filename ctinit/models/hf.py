"""Standard transformers vision models (ViT, ConvNeXt, ...) as ctinit backbones.

:class:`HFBackbone` wraps a transformers *base* model (``ViTModel``, ``ConvNextModel``...) so that it behaves
like a ctinit backbone: ``backbone(pixel_values)`` returns pooled features ``[batch, feature_dim]`` as a plain
tensor, ``backbone.feature_dim`` and ``backbone.config`` (the wrapped model's config) are there.
:func:`ctinit.loading.save_init` unwraps it, so an exported initialization is exactly a checkpoint of the base
model (``config.json`` with its own ``model_type``, weights keyed as the base model expects) that plain
transformers loads, for example with ``AutoModelForImageClassification.from_pretrained(dir, num_labels=N)``.

The pooled features are what that architecture's image-classification head reads, so a head fine-tuned on top of
a ctinit init sees the same features as transformers' own classifier: the [CLS] token after the final layer norm
for ViT, ``pooler_output`` where the base model has one (ConvNeXt), else the mean of the last hidden state.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig

if TYPE_CHECKING:  # transformers' modeling code is imported when a model is built, not by `import ctinit`
    from transformers import PreTrainedModel

from ..errors import CheckpointError

#: How the pooled features are read from the base model's output, by ``model_type`` (default: ``auto``).
POOLING: dict[str, str] = {"vit": "cls", "deit": "cls", "dinov2": "cls"}
#: Extra constructor arguments of the base model, by ``model_type``: no pooler where the classifier reads [CLS].
MODEL_KWARGS: dict[str, dict] = {"vit": {"add_pooling_layer": False}, "deit": {"add_pooling_layer": False},
                                 "dinov2": {}}


class HFBackbone(nn.Module):
    """A transformers base vision model as a ctinit backbone; ``self.model`` is the wrapped model."""

    def __init__(self, model: "PreTrainedModel", pooling: str | None = None):
        super().__init__()
        if getattr(model, "main_input_name", None) != "pixel_values":
            raise CheckpointError(
                f"model_type '{model.config.model_type}' is not an image model (its input is "
                f"'{getattr(model, 'main_input_name', '?')}', not pixel_values): a ctinit backbone takes images"
            )
        self.model = model
        self.pooling = pooling or POOLING.get(model.config.model_type, "auto")

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "HFBackbone":
        kwargs = MODEL_KWARGS.get(config.model_type, {})
        return cls(AutoModel.from_config(config, **kwargs))

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def feature_dim(self) -> int:
        config = self.model.config
        sizes = getattr(config, "hidden_sizes", None)
        if sizes:
            return int(sizes[-1])
        return int(config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and self.pooling in ("auto", "pooler"):
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        return hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)


def tiny_vit_config(image_size: int = 28, **overrides) -> PretrainedConfig:
    from transformers import ViTConfig

    values = dict(patch_size=7, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                  num_channels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return ViTConfig(image_size=image_size, **{**values, **overrides})


def tiny_convnext_config(image_size: int = 28, **overrides) -> PretrainedConfig:
    from transformers import ConvNextConfig

    # patch 4 then one 2x downsampling: 28 px -> 7x7 -> 3x3; a third stage would reach 1x1 at 28 px.
    values = dict(patch_size=4, num_stages=2, hidden_sizes=[32, 64], depths=[2, 2], num_channels=3)
    return ConvNextConfig(image_size=image_size, **{**values, **overrides})


__all__ = ["HFBackbone", "MODEL_KWARGS", "POOLING", "tiny_convnext_config", "tiny_vit_config"]
