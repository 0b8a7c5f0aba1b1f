"""Fine-tuned ctinit backbones as transformers image classifiers (``AutoModelForImageClassification``).

A folder written by ``ctinit finetune --out`` (or :meth:`ImageClassifier.save_pretrained`) holds one of these for the
ctinit backbones, and transformers' own ``ViTForImageClassification`` / ``ConvNextForImageClassification`` for the
standard ones. Weights are keyed ``backbone.*`` (the backbone, as in an initialization) and ``classifier.*`` (the head).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from ..hubio.upload import PushToHubMixin
from .backbones import CtinitConvNetModel, CtinitResNetModel, _CtinitPreTrainedModel
from .configuration import CtinitConvNetConfig, CtinitResNetConfig


class _CtinitForImageClassification(PushToHubMixin, _CtinitPreTrainedModel):
    base_model_class: type = None

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = self.base_model_class(config)
        self.classifier = nn.Linear(config.feature_dim, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> ImageClassifierOutput:
        logits = self.classifier(self.backbone(pixel_values))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    def write_hub_folder(self, folder, *, repo_id: str, license: str | None = None, **_ignored) -> None:
        """The folder ``push_to_hub`` uploads through ctinit's push path (:class:`ctinit.hubio.PushToHubMixin`:
        secrets check, temporary folder, card kept unless ``overwrite_card``); transformers' own push options
        (``safe_serialization``...) are ignored: ctinit writes safetensors only."""
        from .finetuned_folder import write_model_folder

        write_model_folder(self, folder, license=license, repo_id=repo_id)


class CtinitResNetForImageClassification(_CtinitForImageClassification):
    config_class = CtinitResNetConfig
    base_model_class = CtinitResNetModel


class CtinitConvNetForImageClassification(_CtinitForImageClassification):
    config_class = CtinitConvNetConfig
    base_model_class = CtinitConvNetModel


__all__ = ["CtinitConvNetForImageClassification", "CtinitResNetForImageClassification"]
