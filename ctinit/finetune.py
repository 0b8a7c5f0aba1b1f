"""Fine-tune an initialization on one task and evaluate it (the paper's meta-test protocol by default).

Defaults: Adam, lr 1e-3, batch 128, step decay by 0.3 at 40%, 70% and 90% of the steps, random crop (and
flip where the task allows it, unless ``FinetuneConfig.hflip`` says otherwise), a fresh task head. Options
(``ctinit.finetune_schedule``): the length in epochs instead of steps, warm-up and a cosine schedule, label
smoothing, and early stopping on a validation split that keeps the best weights; every result records the recipe,
the steps planned and run, the step kept and why the run stopped.

Plain torch: ``torch.autocast`` for mixed precision and a ``GradScaler`` for fp16. ``channels_last: auto`` (the
default) measures on the CPU whether channels-last inputs make the steps faster, as meta-training does
(``execution/channels_last.py``): the first steps alternate the two memory formats and the faster one is kept
(convnet4-32 1.47x, ResNet-20 1.25x on one thread of the 2-core Zen 4 machine, benchmarks/RESULTS.md). It is the same
fp32 training up to rounding; runs that must match bitwise across machines set it to true or false. The caller says
where to run (``device=``); a multi-process job (meta-validation in the trainer) passes its own device, and nothing
here joins a collective.
"""
from __future__ import annotations

import collections
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal, Optional, Union

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .errors import ConfigError
from .execution import DEFAULT_PRECISION
from .execution.channels_last import MIN_PLANNED_STEPS, AutoChannelsLast
from .execution.compiled import graph_key
from .execution.precision import StepPrecision
from .finetune_schedule import EarlyStopping, build_scheduler, eval_interval, planned_steps
from .meta.optim import OptimizerSpec
from .models.heads import TaskHead, feature_dim, image_size_of
from .schema import Bool, Float, NonNegInt, PositiveFloat, PositiveInt, Precision, Seed, schema
from .tasks.sampler import BatchSampler, eval_batches


@schema
class FinetuneConfig:
    """One fine-tuning run (the paper's meta-test protocol by default); the ``ctinit finetune``/``evaluate`` options
    and meta-validation are built from it."""

    steps: PositiveInt = 1000
    batch_size: PositiveInt = 128
    optimizer: OptimizerSpec = field(default_factory=lambda: OptimizerSpec(name="adam", lr=1e-3))
    milestones: tuple[Annotated[Float, Field(gt=0, le=1)], ...] = (0.4, 0.7, 0.9)  # fractions of the steps
    gamma: PositiveFloat = 0.3  # lr factor at each milestone
    # The options below left at these defaults reproduce runs made before they existed (and the study's records);
    # ctinit finetune's command line sets epochs and early_stop by default (--steps auto).
    epochs: Optional[PositiveFloat] = None  # the length in passes over the training split (then `steps` is unused)
    schedule: Literal["step", "cosine"] = "step"  # step: milestones x gamma; cosine: down to 0 at the last step
    warmup: Annotated[Float, Field(ge=0, lt=1)] = 0.0  # fraction of the steps the lr rises linearly (both schedules)
    label_smoothing: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    early_stop: NonNegInt = 0  # patience in evaluations on the validation split; 0: off. Keeps the best weights.
    augment: Bool = True
    hflip: Optional[Bool] = None  # horizontal flip when augmenting; None: the task's own setting (TaskData.hflip)
    eval_every: NonNegInt = 0  # 0: evaluate at the end only
    seed: Seed = 0
    mixed_precision: Precision = DEFAULT_PRECISION  # auto: as meta-training's (ctinit/execution/precision.py)
    # an execution choice, not part of the recipe: auto measures on the CPU (module docstring), elsewhere contiguous
    channels_last: Union[Bool, Literal["auto"]] = "auto"
    progress: Bool = True


#: FinetuneConfig fields that say how a run executes, not what it computes (up to rounding): left out of recorded
#: recipes and of the keys that tell finished runs apart.
EXECUTION_FIELDS = ("progress", "channels_last")
#: FinetuneConfig fields added after results were recorded, with the values that reproduce those results: left out
#: of the keys that tell finished runs apart while at these values, so that runs recorded before still count.
LATER_FIELDS = {"epochs": None, "schedule": "step", "warmup": 0.0, "label_smoothing": 0.0, "early_stop": 0}


def run_identity(recipe: dict) -> dict:
    """A recipe as the keys of finished runs see it: LATER_FIELDS at their old values left out."""
    return {k: v for k, v in recipe.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


@dataclass
class FinetuneResult:
    test_accuracy: float
    test_loss: float
    train_loss: float  # mean over the last 10% of the planned steps
    steps: int
    seconds: float
    curve: list = field(default_factory=list)  # [(step, accuracy)] on the validation split if given, else test
    channels_last: bool = False  # the memory format the steps after the first few ran in
    precision: str = "no"  # the precision the steps after the first few ran in (mixed_precision auto: measured)
    planned_steps: int = 0  # the length chosen (from `steps`, or from `epochs` and the training split's size)
    best_step: Optional[int] = None  # early stopping: the step whose weights were kept
    stop_reason: str = "steps"  # "steps": ran them all; "early_stop": validation accuracy stopped improving
    recipe: dict = field(default_factory=dict)  # the full recipe (execution choices left out; hflip as used)

    def to_dict(self) -> dict:
        return asdict(self)


def in_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An image batch in channels-last memory when asked (other inputs as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


@torch.no_grad()
def evaluate(backbone: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
             channels: int = 3, channels_last: bool = False) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on a split, in eval mode (running BN statistics); ``channels_last``: the
    input memory format (the one fine-tuning chose)."""
    was_training = backbone.training
    backbone.eval()
    head.eval()
    correct, loss_sum = 0, 0.0
    for xb, yb in eval_batches(x, y, batch_size, channels):
        logits = head(backbone(in_memory_format(xb, channels_last))).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    backbone.train(was_training)
    head.train(was_training)
    n = max(len(y), 1)
    return correct / n, loss_sum / n


def make_config(config: FinetuneConfig | None = None, **overrides) -> FinetuneConfig:
    """``config`` (default: the paper's protocol) with keyword overrides; ``lr=``, ``weight_decay=`` and
    ``optimizer="sgd"`` set the optimizer mapping's entries."""
    import dataclasses

    cfg = config or FinetuneConfig()
    optimizer = dict(cfg.optimizer)
    if isinstance(overrides.get("optimizer"), dict):
        optimizer = dict(overrides.pop("optimizer"))
    elif isinstance(overrides.get("optimizer"), str):
        optimizer["name"] = overrides.pop("optimizer")
    for key in ("lr", "weight_decay", "momentum"):
        if key in overrides:
            optimizer[key] = overrides.pop(key)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown fine-tuning options {unknown}; known: {sorted(fields | {'lr', 'weight_decay', 'momentum'})}")
    return dataclasses.replace(cfg, optimizer=optimizer, **overrides)  # validated by the schema


def uses_hflip(config: FinetuneConfig, task) -> bool:
    """Whether fine-tuning on ``task`` flips images: ``config.hflip`` when set, else the task's own setting."""
    return bool(task.hflip if config.hflip is None else config.hflip)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``: the GPU when there is one, else the CPU; otherwise the device named."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from e


#: Interleaved pairs of steps ``channels_last: auto`` times (after one warm-up step per memory format): a
#: fine-tuning step is one model's, tens of milliseconds on the CPU, so more pairs than meta-training's TRIAL_PAIRS
#: cost little and keep a busy machine's noise out of the choice.
FINETUNE_TRIAL_PAIRS = 10


class InputMemoryFormat:
    """Which memory format each fine-tuning step's input batch gets: ``channels_last`` as configured, or, for
    ``auto`` on the CPU in runs of at least MIN_PLANNED_STEPS steps, measured over the first steps by an
    ``AutoChannelsLast`` (its choice is recorded per machine under a ``finetune:`` key, apart from meta-training's)."""

    def __init__(self, setting, device: torch.device, steps: int, backbone: nn.Module, autocast):
        self.channels_last = setting is True
        self.shape: tuple = ()
        self.trial = None
        if setting == "auto" and device.type == "cpu" and steps >= MIN_PLANNED_STEPS:
            self.trial = AutoChannelsLast(lambda: "finetune:" + graph_key(backbone, self.shape,
                                                                          autocast() if callable(autocast) else autocast),
                                    trial_pairs=FINETUNE_TRIAL_PAIRS)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The next step's input in the memory format it runs in."""
        if self.trial is not None:
            self.shape = tuple(x.shape)
            self.channels_last = self.trial.use_channels_last()
        return in_memory_format(x, self.channels_last)

    def done(self, seconds: float) -> None:
        """The step's compute time (sampling excluded: it is the same in both memory formats)."""
        if self.trial is not None:
            self.trial.done(seconds)
            if self.trial.decided:
                self.channels_last, self.trial = self.trial.channels_last, None


def finetune(model: nn.Module, task, config: FinetuneConfig | None = None, device: str | torch.device | None = None,
             log=None, on_step=None, validation=None, **overrides) -> FinetuneResult:
    """Fine-tune ``model`` (modified in place) on ``task`` and evaluate it on the task's test split.

    ``model`` is a backbone (a fresh head sized to the task goes on top) or an
    :class:`~ctinit.models.ImageClassifier` (its head is trained if it has one for the task's classes; a
    feature-only classifier gets a fresh head, kept as ``model.head``). ``task`` is a ``TaskData`` or a task spec
    (``npz:PATH``, ``builtin:NAME``...), loaded at the backbone's input size. Keyword overrides set
    :class:`FinetuneConfig` fields (``steps=300, lr=1e-3``...). ``on_step(step)`` is called after every step.
    ``validation``: a part held out of the training split (a ``TaskData`` whose train split is the validation set,
    :meth:`~ctinit.tasks.TaskData.split_train`): the curve is measured on it instead of the test split.
    """
    from tqdm.auto import tqdm

    cfg = make_config(config, **overrides) if (overrides or config is None) else config
    # An ImageClassifier (backbone + head) is recognized by its two parts, so that this module need not import it.
    classifier = model if (hasattr(model, "backbone") and hasattr(model, "head")) else None
    backbone = classifier.backbone if classifier is not None else model
    if isinstance(task, str):
        from .tasks import load_task

        task = load_task(task, image_size=image_size_of(backbone), seed=cfg.seed)
    device = resolve_device(device)
    torch.manual_seed(cfg.seed)
    channels = getattr(backbone.config, "num_channels", 3)
    if classifier is not None and isinstance(classifier.head, TaskHead):
        if classifier.head.num_classes != task.num_classes:
            raise ConfigError(f"the model's head has {classifier.head.num_classes} classes but task '{task.name}' has "
                              f"{task.num_classes}: load it with num_classes={task.num_classes} (or 0 for a fresh head)")
        head = classifier.head
    else:
        head = TaskHead(feature_dim(backbone), task.num_classes)
        if classifier is not None:
            classifier.head = head
    head.class_names = list(task.classes)  # save_pretrained's id2label: the task's class names, not 0, 1, ...
    if cfg.early_stop and validation is None:
        raise ConfigError("early stopping needs a validation split (validation=..., or --val-fraction above 0): it "
                          "must not choose the weights on the test split")
    task = task.to(device)
    curve_name, curve_x, curve_y = ("test_accuracy", task.x_test, task.y_test) if validation is None else \
        ("validation_accuracy", validation.x_train.to(device), validation.y_train.to(device))
    steps = planned_steps(cfg.steps, cfg.epochs, len(task.y_train), cfg.batch_size)
    every = eval_interval(cfg.eval_every, cfg.early_stop, steps, len(task.y_train), cfg.batch_size)
    hflip = uses_hflip(cfg, task)
    sampler = BatchSampler(task.x_train, task.y_train, cfg.batch_size, seed=cfg.seed, augment=cfg.augment,
                           hflip=hflip, channels=channels)
    model = nn.ModuleDict({"backbone": backbone, "head": head}).to(device)
    optimizer = OptimizerSpec.from_dict(cfg.optimizer).build(model.parameters())
    scheduler = build_scheduler(optimizer, steps, cfg.schedule, cfg.warmup, cfg.milestones, cfg.gamma)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.mixed_precision == "fp16")
    memory_format = InputMemoryFormat(cfg.channels_last, device, steps, backbone, lambda: precision.autocast)
    # auto: measured first (memory format untouched meanwhile), then the memory format in the chosen precision
    precision = StepPrecision(cfg.mixed_precision, device, steps,
                              lambda: graph_key(backbone, memory_format.shape, False), FINETUNE_TRIAL_PAIRS)
    tracker = EarlyStopping(cfg.early_stop)
    for line in (task.preprocessing(channels, hflip, cfg.augment) if log and hasattr(task, "preprocessing") else []):
        log(line)
    if log and (cfg.epochs is not None or cfg.early_stop):
        log(f"fine-tuning {task.name}: {_length_line(cfg, steps, every, len(task.y_train))}")
    model.train()

    curve = []
    recent = collections.deque(maxlen=max(1, steps // 10))  # the last 10% of the planned steps (or fewer, if stopped)
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc=f"finetune {task.name}", disable=not cfg.progress, file=sys.stderr,
               leave=False, dynamic_ncols=True)
    postfix, last = {}, 0
    for step in bar:
        last = step
        x, y = sampler()
        step_start = time.perf_counter()  # the memory format conversion is part of what a memory format costs
        measuring_precision = precision.measuring
        memory_format.shape = tuple(x.shape)
        x = x if measuring_precision else memory_format.apply(x)
        with precision.context():
            loss = F.cross_entropy(model["head"](model["backbone"](x)).float(), y,
                                   label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with warnings.catch_warnings():
            # fp16: the scaler skips a step whose gradients overflowed; the schedule still counts it (as before)
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            scheduler.step()
        (precision if measuring_precision else memory_format).done(time.perf_counter() - step_start)
        if on_step is not None:
            on_step(step)
        recent.append(loss.detach())
        nonfinite = ~torch.isfinite(loss.detach()) if step == 1 else nonfinite | ~torch.isfinite(loss.detach())
        if (step <= 10 or step % 50 == 0 or step == steps) and bool(nonfinite):  # a host sync: not every step
            from .errors import NonFiniteError

            raise NonFiniteError(f"fine-tuning on {task.name}: the loss became non-finite by step {step}: lower the "
                                 "learning rate or check the initialization's weights (nothing was written)")
        if cfg.progress and (step % 10 == 0 or step == steps):  # the loss is a host sync: every 10 steps
            postfix["loss"] = f"{loss.item():.3f}"
            bar.set_postfix(postfix, refresh=False)
        if every and (step % every == 0 or step == steps):
            acc, val_loss = evaluate(backbone, head, curve_x, curve_y, channels=channels,
                                     channels_last=memory_format.channels_last)
            curve.append((step, acc))
            tracker.update(step, acc, val_loss, model if cfg.early_stop else None)
            postfix.update(loss=f"{loss.item():.3f}", val_acc=f"{acc:.3f}")
            bar.set_postfix(postfix)
            if log:
                log(f"step {step}/{steps} loss {loss.item():.4f} {curve_name} {acc:.4f}")
            if tracker.should_stop:
                break
    seconds = time.perf_counter() - start
    bar.close()
    stopped = tracker.should_stop and last < steps
    if cfg.early_stop:
        tracker.restore(model)  # the best weights, not the last
        if log:
            log(f"fine-tuning {task.name}: " + (f"stopped early at step {last}" if stopped else f"ran all {steps} steps")
                + f"; kept step {tracker.best_step} ({curve_name} {tracker.best_accuracy:.4f})")
    acc, test_loss = evaluate(backbone, head, task.x_test, task.y_test, channels=channels,
                              channels_last=memory_format.channels_last)
    if not curve or curve[-1][0] != last:
        curve.append((last, acc if validation is None else evaluate(
            backbone, head, curve_x, curve_y, channels=channels, channels_last=memory_format.channels_last)[0]))
    train_loss = torch.stack(list(recent)).mean().item() if recent else float("nan")
    return FinetuneResult(acc, test_loss, train_loss, last, seconds, curve, memory_format.channels_last,
                          precision=precision.precision,
                          planned_steps=steps, best_step=tracker.best_step if cfg.early_stop else None,
                          stop_reason="early_stop" if stopped else "steps", recipe=recipe_of(cfg, hflip))


def recipe_of(config: FinetuneConfig, hflip: bool) -> dict:
    """The recipe a run used, as results record it: every field but the seed and the execution choices, with the
    flip actually used (not "the task's setting")."""
    recipe = {k: v for k, v in asdict(config).items() if k not in ("seed", *EXECUTION_FIELDS)}
    recipe["hflip"] = bool(hflip)
    return recipe


def _length_line(cfg: FinetuneConfig, steps: int, every: int, n_train: int) -> str:
    """One line saying how the length was chosen (it depends on the data, so it is said)."""
    length = (f"{cfg.epochs:g} epochs of {n_train} examples at batch {cfg.batch_size} = at most {steps} steps"
              if cfg.epochs is not None else f"at most {steps} steps")
    if cfg.early_stop:
        length += (f", stopping when validation accuracy has not improved for {cfg.early_stop} evaluations "
                   f"(every {every} steps) and keeping the best weights")
    return length
