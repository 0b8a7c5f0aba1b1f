"""Task heads and :class:`ImageClassifier` (a backbone at its initialization plus a head), what
:func:`ctinit.from_pretrained` returns."""
from __future__ import annotations

import torch
from torch import nn

from ..hubio.upload import PushToHubMixin
from .heads import TaskHead, feature_dim


class ImageClassifier(PushToHubMixin, nn.Module):
    """``backbone`` (pooled features) + ``head``: ``forward(pixel_values) -> logits``.

    ``num_classes=0`` (or None) gives ``head = nn.Identity()``: ``forward`` returns the pooled features, and
    :func:`ctinit.finetune.finetune` puts a fresh head sized to the task on top (as timm does with
    ``num_classes=0``). Inputs are float ``[B, C, H, W]`` scaled to [-1, 1] (``(x / 255 - 0.5) / 0.5``), at the
    config's ``image_size``; :func:`ctinit.tasks.to_float` does that for uint8 images. ``push_to_hub(repo_id,
    labels=..., made_with=..., license=..., private=..., revision=..., create_pr=..., overwrite_card=...)`` uploads
    the folder of :meth:`save_pretrained` (:class:`ctinit.hubio.PushToHubMixin`).
    """

    def __init__(self, backbone: nn.Module, num_classes: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = TaskHead(feature_dim(backbone), num_classes) if num_classes else nn.Identity()

    @property
    def config(self):
        return self.backbone.config

    @property
    def num_classes(self) -> int:
        return self.head.num_classes if isinstance(self.head, TaskHead) else 0

    @property
    def feature_dim(self) -> int:
        return feature_dim(self.backbone)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values))

    def finetune(self, task, config=None, device=None, log=None, **overrides):
        """Fine-tune in place on ``task`` (a ``TaskData`` or a task spec such as ``npz:my_task.npz``); returns a
        :class:`~ctinit.finetune.FinetuneResult`. Keyword overrides set :class:`~ctinit.finetune.FinetuneConfig`
        fields (``steps=1000, lr=1e-3, batch_size=128, seed=0...``)."""
        from ..finetune import finetune

        return finetune(self, task, config, device=device, log=log, **overrides)

    def save_pretrained(self, out, labels=None, made_with: dict | None = None, license: str | None = None,
                        overwrite: bool = False, repo_id: str | None = None):
        """Write a transformers image-classification folder (config with ``id2label`` from ``labels``, by default
        the class names of the task :meth:`finetune` trained the head on; safetensors
        weights, image processor config, card naming ``repo_id`` where it will be pushed); see
        :mod:`ctinit.models.finetuned_folder`. Needs a head (fine-tune first)."""
        from .finetuned_folder import save_finetuned

        return save_finetuned(self, out, labels=labels, made_with=made_with, license=license, overwrite=overwrite,
                              repo_id=repo_id)

    def to_transformers(self, labels=None, made_with: dict | None = None):
        """The equal transformers ``*ForImageClassification`` model
        (:func:`ctinit.models.finetuned_transformers.to_transformers`)."""
        from .finetuned_transformers import to_transformers

        return to_transformers(self, labels, made_with)

    def write_hub_folder(self, folder, *, repo_id: str, labels=None, made_with: dict | None = None,
                         license: str | None = None) -> None:
        """The folder :meth:`push_to_hub` uploads (that of :meth:`save_pretrained`, its card naming ``repo_id``)."""
        from .finetuned_folder import write_model_folder

        write_model_folder(self, folder, labels=labels, made_with=made_with, license=license, repo_id=repo_id)


__all__ = ["ImageClassifier"]
