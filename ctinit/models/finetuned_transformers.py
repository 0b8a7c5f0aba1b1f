"""An :class:`~ctinit.models.ImageClassifier` (backbone + head) as the transformers ``*ForImageClassification``
model a fine-tuned folder holds (:mod:`ctinit.models.finetuned_folder` writes it)."""
from __future__ import annotations

import copy

from torch import nn

from ..errors import ConfigError
from ..version import __version__
from .configuration import is_ctinit_config
from .heads import TaskHead
from .hf import HFBackbone


def _labels(labels, num_classes: int) -> list[str]:
    names = [str(c) for c in labels] if labels else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for a head of {num_classes} classes")
    if len(set(names)) != len(names):
        raise ConfigError("class names must be distinct (label2id maps each name to one class)")
    return names


def to_transformers(classifier, labels=None, made_with: dict | None = None):
    """The transformers ``*ForImageClassification`` model equal to ``classifier`` (an ImageClassifier with a head),
    with ``id2label`` from ``labels`` (default: the class names of the task the head was fine-tuned on; numbers
    where there are none) and ``config.ctinit = made_with``."""
    from transformers import AutoModelForImageClassification


    head = getattr(classifier, "head", None)
    if not isinstance(head, TaskHead):
        raise ConfigError("this classifier has no head: fine-tune it first (or save the backbone with ctinit.loading.save_init)")
    backbone = classifier.backbone
    inner = backbone.model if isinstance(backbone, HFBackbone) else backbone
    config = copy.deepcopy(inner.config)
    names = _labels(labels if labels else getattr(head, "class_names", None), head.num_classes)
    config.num_labels = len(names)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    config.ctinit = {"library_version": __version__, **(made_with or {})}
    if is_ctinit_config(config):
        from .for_image_classification import CtinitConvNetForImageClassification, CtinitResNetForImageClassification

        model_class = {"ctinit-resnet": CtinitResNetForImageClassification,
                       "ctinit-convnet": CtinitConvNetForImageClassification}[config.model_type]
        model = model_class(config)
        base = model.backbone
    else:
        model = AutoModelForImageClassification.from_config(config)
        base = getattr(model, model.base_model_prefix)
    classifier_layer = getattr(model, "classifier", None)
    if not isinstance(classifier_layer, nn.Linear) or classifier_layer.weight.shape != head.weight.shape:
        raise ConfigError(f"model_type '{config.model_type}': its transformers classifier is not one linear layer on "
                          f"ctinit's pooled features, so it cannot be saved as {type(model).__name__}")
    own = base.state_dict()
    state = {k: v for k, v in inner.state_dict().items() if k in own}
    missing = sorted(set(own) - set(state))
    if missing:
        raise ConfigError(f"cannot map the backbone onto {type(model).__name__}: no tensor for '{missing[0]}'")
    base.load_state_dict(state, strict=True)
    classifier_layer.load_state_dict(head.state_dict())
    model.config.architectures = [type(model).__name__]
    return model.eval()


__all__ = ["to_transformers"]
