"""Fine-tune an initialization on one task and evaluate it (the paper's meta-test protocol by default).

Defaults: Adam, lr 1e-3, batch 128, step decay by 0.3 at 40%, 70% and 90% of the steps, random crop (and
flip where the task allows it), a fresh task head.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .meta.optim import OptimizerSpec
from .models import TaskHead
from .tasks.sampler import BatchSampler, eval_batches


@dataclass
class FinetuneConfig:
    steps: int = 1000
    batch_size: int = 128
    optimizer: dict = field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    milestones: tuple[float, ...] = (0.4, 0.7, 0.9)
    gamma: float = 0.3
    augment: bool = True
    eval_every: int = 0  # 0: evaluate at the end only
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16
    progress: bool = True


@dataclass
class FinetuneResult:
    test_accuracy: float
    test_loss: float
    train_loss: float  # mean over the last 10% of steps
    steps: int
    seconds: float
    curve: list = field(default_factory=list)  # [(step, test_accuracy)]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(backbone: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
             channels: int = 3) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on a split, in eval mode (running BN statistics)."""
    was_training = backbone.training
    backbone.eval()
    head.eval()
    correct, loss_sum = 0, 0.0
    for xb, yb in eval_batches(x, y, batch_size, channels):
        logits = head(backbone(xb)).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    backbone.train(was_training)
    head.train(was_training)
    n = max(len(y), 1)
    return correct / n, loss_sum / n


def finetune(backbone: nn.Module, task, config: FinetuneConfig | None = None, device: str | torch.device | None = None,
             log=None) -> FinetuneResult:
    """Fine-tune ``backbone`` (modified in place) with a fresh head on ``task`` (a ``TaskData``)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    cfg = config or FinetuneConfig()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=(str(device) == "cpu"))
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    channels = getattr(backbone.config, "num_channels", 3)
    head = TaskHead(backbone.config.feature_dim, task.num_classes)
    task = task.to(device)
    sampler = BatchSampler(task.x_train, task.y_train, cfg.batch_size, seed=cfg.seed, augment=cfg.augment,
                           hflip=task.hflip, channels=channels)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    optimizer = OptimizerSpec.from_dict(cfg.optimizer).build(model.parameters())
    milestones = sorted({max(1, int(math.floor(m * cfg.steps))) for m in cfg.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    curve, recent = [], []
    tail = max(1, cfg.steps // 10)
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.steps + 1), desc=f"finetune {task.name}", disable=not cfg.progress, file=sys.stderr,
               leave=False, dynamic_ncols=True)
    for step in bar:
        x, y = sampler()
        with accelerator.autocast():
            loss = F.cross_entropy(model["head"](model["backbone"](x)), y)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        if step > cfg.steps - tail:
            recent.append(loss.detach())
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            acc, _ = evaluate(backbone, head, task.x_test, task.y_test, channels=channels)
            curve.append((step, acc))
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}")
            if log:
                log(f"step {step}/{cfg.steps} loss {loss.item():.4f} test_accuracy {acc:.4f}")
    seconds = time.perf_counter() - start
    bar.close()
    acc, test_loss = evaluate(backbone, head, task.x_test, task.y_test, channels=channels)
    if not curve or curve[-1][0] != cfg.steps:
        curve.append((cfg.steps, acc))
    train_loss = torch.stack(recent).mean().item() if recent else float("nan")
    return FinetuneResult(acc, test_loss, train_loss, cfg.steps, seconds, curve)
