"""Task heads and :class:`ImageClassifier` (a backbone at its initialization plus a head), what
:func:`ctinit.from_pretrained` returns."""
from __future__ import annotations

import torch
from torch import nn

from .heads import TaskHead, feature_dim


class ImageClassifier(nn.Module):
    """``backbone`` (pooled features) + ``head``: ``forward(pixel_values) -> logits``.

    ``num_classes=0`` (or None) gives ``head = nn.Identity()``: ``forward`` returns the pooled features, and
    :func:`ctinit.finetune.finetune` puts a fresh head sized to the task on top (as timm does with
    ``num_classes=0``). Inputs are float ``[B, C, H, W]`` scaled to [-1, 1] (``(x / 255 - 0.5) / 0.5``), at the
    config's ``image_size``; :func:`ctinit.tasks.to_float` does that for uint8 images.
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
                        overwrite: bool = False):
        """Write a transformers image-classification folder (config with ``id2label`` from ``labels``, safetensors
        weights, image processor config, card); see :mod:`ctinit.finetuned`. Needs a head (fine-tune first)."""
        from ..finetuned import save_finetuned

        return save_finetuned(self, out, labels=labels, made_with=made_with, license=license, overwrite=overwrite)

    def push_to_hub(self, repo_id: str, labels=None, made_with: dict | None = None, *, private: bool = False,
                    revision: str | None = None, create_pr: bool = False, overwrite_card: bool = False,
                    license: str | None = None, commit_message: str | None = None):
        """Write the folder of :meth:`save_pretrained` into a temporary directory and upload it with
        :func:`ctinit.publish.push_folder` (secrets scan, the Hub's card kept unless ``overwrite_card``)."""
        import tempfile

        from ..finetuned import write_model_folder
        from ..publish import check_push, push_folder

        check_push(repo_id)
        with tempfile.TemporaryDirectory(prefix="ctinit-push-") as tmp:
            write_model_folder(self, tmp, labels=labels, made_with=made_with, license=license, repo_id=repo_id)
            return push_folder(tmp, repo_id, private=private, revision=revision, create_pr=create_pr,
                               overwrite_card=overwrite_card, commit_message=commit_message)


__all__ = ["ImageClassifier", "TaskHead"]
