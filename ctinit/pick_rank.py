"""The first stage of ``ctinit pick``: rank every candidate initialization from one cheap signal, without training.

The signal is the nearest-class-mean accuracy of the frozen features on the validation split: each image of the
training part goes through the initialization unchanged (its weights frozen; batch-norm statistics re-estimated on
the training part, see :func:`adapt_batchnorm`), features are
L2-normalized, each class is represented by the normalized mean of its training features, and a validation image is
assigned the class whose mean is closest in angle. It needs one forward pass over the task per candidate (seconds on
a CPU), and it measures what fine-tuning starts from: how well the features already separate the user's classes.
How often it agrees with full fine-tuning on tasks no entry was meta-trained on is measured by
``benchmarks/pick_signal.py`` (benchmarks/recorded/pick/signal-agreement.json).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

#: Names of the signals ``feature_scores`` can compute; the first is the one pick ranks by.
SIGNALS = ("ncm", "knn1")


@torch.no_grad()
def adapt_batchnorm(backbone, x: torch.Tensor, channels: int, batch_size: int = 256):
    """A copy of ``backbone`` whose batch-norm statistics are those of the images ``x`` (the task's training part;
    AdaBN). Meta-learned initializations are trained with batch statistics in their inner loops, so their running
    statistics describe the meta-training tasks, not the user's: with them, the frozen features of glyph-resnet20
    on georgian (20 per class) scored 0.16 nearest-class-mean accuracy, with the task's own statistics 0.92."""
    import copy

    from .tasks.sampler import eval_batches

    adapted = copy.deepcopy(backbone)
    norms = [m for m in adapted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return adapted.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all the batches
    adapted.train()
    dummy = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for xb, _ in eval_batches(x, dummy, batch_size, channels):
        adapted(xb)
    return adapted.eval()


@torch.no_grad()
def frozen_features(backbone, x: torch.Tensor, channels: int, batch_size: int = 256) -> torch.Tensor:
    """The backbone's pooled features of every image of ``x`` (uint8 NCHW), in eval mode, as float32 rows."""
    from .tasks.sampler import eval_batches

    was_training = backbone.training
    backbone.eval()
    dummy = torch.zeros(len(x), dtype=torch.long, device=x.device)
    parts = [backbone(xb).float().flatten(1) for xb, _ in eval_batches(x, dummy, batch_size, channels)]
    backbone.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def nearest_class_mean_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor,
                                val_y: torch.Tensor) -> float:
    """Accuracy on ``val`` of the nearest class mean (cosine) of L2-normalized ``train`` features. A class with no
    training example never wins."""
    if len(val_y) == 0:
        return float("nan")
    train_f, val_f = F.normalize(train_f, dim=1), F.normalize(val_f, dim=1)
    classes = int(max(train_y.max().item(), val_y.max().item())) + 1
    sums = torch.zeros(classes, train_f.shape[1], dtype=train_f.dtype).index_add_(0, train_y, train_f)
    counts = torch.bincount(train_y, minlength=classes)
    similarity = val_f @ F.normalize(sums, dim=1).T
    similarity[:, counts == 0] = -float("inf")
    return (similarity.argmax(1) == val_y).float().mean().item()


def nearest_neighbour_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor,
                               val_y: torch.Tensor) -> float:
    """Accuracy on ``val`` of the nearest training example (cosine): the k-NN (k=1) signal, for comparison."""
    if len(val_y) == 0:
        return float("nan")
    similarity = F.normalize(val_f, dim=1) @ F.normalize(train_f, dim=1).T
    return (train_y[similarity.argmax(1)] == val_y).float().mean().item()


def feature_scores(inits: list[str], data: str, *, validation_fraction: float, seed: int = 0,
                   max_train_per_class: int | None = None, max_train_samples: int | None = None,
                   log=None) -> dict[str, dict]:
    """``{init: {"ncm": accuracy, "knn1": accuracy, "seconds": s}}`` on the validation split that fine-tuning with
    ``seed`` would carve (the test split is never read). The task is read once per input size."""
    from .loading import init_config, load_init
    from .models import image_size_of
    from .tasks import load_task
    from .tasks.subsets import prepare_task

    tasks: dict[int, object] = {}
    scores = {}
    for init in inits:
        start = time.perf_counter()
        backbone = load_init(init, seed=seed)
        size = image_size_of(backbone)
        if size not in tasks:
            raw = load_task(data, image_size=size, seed=seed)
            tasks[size] = prepare_task(raw, seed, validation_fraction, "validation", max_train_per_class,
                                       max_train_samples)[0]  # its test split is the validation split
        task = tasks[size]
        channels = int(getattr(init_config(init), "num_channels", 3) or 3)
        backbone = adapt_batchnorm(backbone, task.x_train, channels)
        train_f = frozen_features(backbone, task.x_train, channels)
        val_f = frozen_features(backbone, task.x_test, channels)
        scores[init] = {"ncm": nearest_class_mean_accuracy(train_f, task.y_train, val_f, task.y_test),
                        "knn1": nearest_neighbour_accuracy(train_f, task.y_train, val_f, task.y_test),
                        "seconds": time.perf_counter() - start}
        if log:
            log(f"ctinit pick: {init}: frozen-feature score {scores[init]['ncm']:.3f}")
    return scores


def shortlist(scores: dict[str, dict], top: int, signal: str = SIGNALS[0]) -> list[str]:
    """The ``top`` best candidates by ``signal`` (ties: the order given); ``top`` 0: all of them."""
    order = sorted(scores, key=lambda init: -scores[init][signal])  # sorted() is stable: ties keep their order
    return order if top <= 0 else order[:top]


__all__ = ["SIGNALS", "adapt_batchnorm", "feature_scores", "frozen_features", "nearest_class_mean_accuracy", "nearest_neighbour_accuracy",
           "shortlist"]
