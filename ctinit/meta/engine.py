"""The trajectory engine: one loop that runs CTS, Reptile, FOMAML, Leap, MTL and independent training.

One global step (see ``TrajectoryEngine.step``):

1. every task takes one inner step: ``(theta_t, h_t) <- O_t(grad L_t(theta_t, h_t; batch_t))``;
2. every ``meta_interval`` steps: ``g = mean_t direction`` over all tasks of all processes,
   ``phi' = meta_optimizer(phi, g)``, and if the rule shifts, ``theta_t += phi' - phi``;
3. every ``reset_period`` (K) steps: ``theta_t <- phi`` (soft: heads, BN statistics and inner optimizer state
   are kept; hard: inner optimizer state is cleared and, with ``reset_heads``, heads are re-initialized).

Memory layout: the meta-learned parameters of every task's backbone are views into one ``[T, P]`` fp32 buffer
(``thetas``), their gradients views into another (``grads``), and phi is a ``[P]`` fp32 parameter. Meta-updates,
shifts and resets are therefore a few vector operations, whatever the number of parameter tensors. Heads,
parameters excluded from meta-learning and BN buffers are ordinary per-task tensors that no meta operation
touches. Each task's inner optimizer sees its row of ``thetas`` as one flat parameter (plus its private
parameters), so an inner step is a few vector operations too; its ``state_dict`` keeps the per-tensor format.

Execution (``execution=``): ``sequential`` runs the tasks' forward/backward one after another; ``batched`` runs
them as one program on stacked parameters (grouped convolutions, per-task batch norm; see ``batched.py``), the
same training up to floating-point rounding; ``auto`` (default) picks batched on CUDA and sequential on the CPU,
where grouped kernels measured slower (benchmarks/RESULTS.md), and falls back to sequential when the backbone,
heads, loss or batches do not allow batching. The choice is logged and kept in ``engine.execution``.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .defaults import INNER_OPTIMIZER, META_OPTIMIZER, RESET_PERIOD
from ..errors import ConfigError
from .compiled import AutoCompile, CompiledBackbone, compile_forward, graph_key
from .device_step import CapturedStep, TaskBuffers, masked_optimizer_step
from .optim import OptimizerSpec
from .rules import (
    REDUCE_DTYPE,
    MetaRule,
    cts_update,
    get_rule,
    gradient_direction,
    meta_update,
    path_length_segment,
    trajectory_direction,
)

log = logging.getLogger(__name__)

EXECUTIONS = ("auto", "sequential", "batched")
#: ``compile``: how a global step is run. ``graphs`` replays the step as a CUDA graph; ``inductor`` is
#: ``torch.compile(mode="reduce-overhead")`` of the step; ``backbone`` compiles every task's backbone forward and
#: backward (one graph shared by the tasks; sequential execution; ``compiled.py``). ``auto`` is ``backbone`` on the
#: CPU where the run's own timings show it pays off (``compiled.AutoCompile``), else ``off``: on CUDA until a GPU
#: measurement shows a mode faster (benchmarks/RESULTS.md, "GPU plan").
COMPILE_MODES = ("auto", "off", "graphs", "inductor", "backbone")

LossFn = Callable[[nn.Module, nn.Module, object], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def classification_loss(backbone: nn.Module, head: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``head(backbone(x))`` against ``y``, and the batch accuracy (detached, for logs)."""
    x, y = batch
    logits = head(backbone(x))
    return F.cross_entropy(logits, y), (logits.detach().argmax(1) == y).float().mean()


def _split_loss(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A loss function returns a scalar loss, or ``(loss, accuracy)``."""
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


class FlatLayout:
    """Where each meta-learned parameter tensor sits in a flat ``[P]`` vector."""

    def __init__(self, named_params: Sequence[tuple[str, nn.Parameter]]):
        self.names = [n for n, _ in named_params]
        self.shapes = [p.shape for _, p in named_params]
        self.numels = [p.numel() for _, p in named_params]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        self.size = self.offsets[-1]

    def flatten(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        # fp32, or fp64 for a model built in float64 (the equivalence tests compare execution paths in fp64)
        dtype = torch.float64 if params and params[0].dtype == torch.float64 else torch.float32
        return torch.cat([p.detach().reshape(-1).to(dtype) for p in params])

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat[o:o + n].view(s) for o, n, s in zip(self.offsets, self.numels, self.shapes)]

    def bind(self, params: Sequence[nn.Parameter], flat: torch.Tensor, grad_flat: torch.Tensor | None = None) -> None:
        """Make ``params`` (and their ``.grad``) views into ``flat`` (and ``grad_flat``) without changing values."""
        for p, view in zip(params, self.views(flat)):
            view.copy_(p.detach())
            p.data = view
        if grad_flat is not None:
            for p, view in zip(params, self.views(grad_flat)):
                p.grad = view


@dataclass
class StepResult:
    """What one global step did. Tensors stay on the device: building a StepResult never waits for the device.

    ``nonfinite`` is the device-side bool mask of the local tasks whose step was skipped (non-finite loss or
    gradient); ``skipped`` reads it back as a list (None when no task was skipped), which waits for the step to
    finish: read it at logging points, not every step, where throughput matters.
    """

    step: int
    losses: torch.Tensor
    meta_step: bool
    reset: bool
    delta: torch.Tensor | None = None  # phi' - phi of this step's meta-update
    accuracies: torch.Tensor | None = None  # per local task, when the loss function reports them
    nonfinite: torch.Tensor | None = None  # bool [T]: local tasks whose step was skipped

    @property
    def skipped(self) -> list[int] | None:
        """The local tasks whose step was skipped, or None (a host read of ``nonfinite``)."""
        if self.nonfinite is None:
            return None
        skipped = [t for t, bad in enumerate(self.nonfinite.tolist()) if bad]
        return skipped or None


class TrajectoryEngine:
    """Trains T task trajectories from a shared initialization phi and meta-learns phi.

    Args:
        backbone: the initialization; its parameters become phi (the module itself becomes ``phi_module``).
        heads: one task head per local task (never part of phi).
        batches: one callable per local task returning the next training batch.
        rule: ``cts``, ``reptile``, ``fomaml-cts``, ``fomaml``, ``fomaml-k``, ``leap``, ``mtl`` or ``scratch`` (or a MetaRule).
        reset_period: K, the trajectory length between resets to phi.
        meta_interval: steps between meta-updates (default: the rule's; None means K).
        shift: whether meta-updates shift the trajectories (default: the rule's).
        reset: ``soft`` or ``hard``; ``reset_heads`` re-initializes heads at hard resets.
        inner_optimizer, meta_optimizer: ``OptimizerSpec``s (or dicts).
        meta_exclude: regexes of backbone parameter names kept per task instead of meta-learned.
        loss_fn: ``loss_fn(backbone, head, batch) -> scalar``.
        all_reduce: sums a tensor across processes in place (None on one process).
        num_tasks_total: the number of tasks over all processes (default: the local number).
        autocast: a context-manager factory wrapped around each inner forward/backward (mixed precision);
            phi, the meta-update and the shift stay fp32 whatever it does.
        grad_scaling: dynamic loss scaling per task (for fp16).
        execution: ``auto``, ``sequential`` or ``batched`` (see the module docstring); ``batched`` is refused with
            a ConfigError where it is not supported, ``auto`` falls back to sequential.
        compile: ``off`` (eager: the reference), ``graphs`` (the whole global step captured as one CUDA graph and
            replayed; CUDA only, batch sources must be ``DeviceBatchSampler``s), ``inductor``
            (``torch.compile(mode="reduce-overhead")`` of the step; see ``device_step.py``), ``backbone`` (every
            task's backbone forward/backward compiled, sequential execution; see ``compiled.py``) or ``auto``:
            ``backbone`` on the CPU with sequential execution when ``planned_steps`` is given and this run's timings
            show it pays off, else ``off``.
        planned_steps: the run's total number of global steps (for ``compile: auto``: whether compiling pays off).
        channels_last: run convolutions on channels-last inputs (and, batched, weights): a layout for tensor
            cores to be measured on the GPU; the parameters stay in their flat buffers either way.
        heldout_batches: one callable per local task for the ``heldout_gradient`` rule (FOMAML): its held-out
            batch comes from these (e.g. a validation split of the task) instead of a fresh training batch.

    A task whose inner loss (or, with loss scaling, gradient) is not finite skips that step: its parameters,
    optimizer state, gradient row and buffers (BN running statistics, which the forward already updated) are left
    as they were, so the non-finite value never reaches phi or the task's statistics. The skip is a mask on the
    device (``device_step.py``): a step never waits for the device to decide it (except with fp16 loss scaling,
    whose GradScaler reads its overflow check on the host; and on the CPU, where a host read costs nothing, a step
    without a skip runs its inner steps unmasked: ``sync_free``). ``skip_counts`` counts such steps per task and
    ``skip_streak`` the current run of them, as device tensors; ``skipped_steps`` and ``nonfinite_streak`` read
    them back as lists.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: Sequence[nn.Module],
        batches: Sequence[Callable[[], object]],
        *,
        rule: str | MetaRule = "cts",
        reset_period: int = RESET_PERIOD,
        meta_interval: int | None = None,
        shift: bool | None = None,
        reset: str = "soft",
        reset_heads: bool = False,
        inner_optimizer: OptimizerSpec | dict | None = None,
        meta_optimizer: OptimizerSpec | dict | None = None,
        meta_exclude: Sequence[str] = (),
        loss_fn: LossFn = classification_loss,
        all_reduce: Callable[[torch.Tensor], None] | None = None,
        num_tasks_total: int | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
        grad_scaling: bool = False,
        execution: str = "auto",
        compile: str = "off",
        channels_last: bool = False,
        heldout_batches: Sequence[Callable[[], object]] | None = None,
        planned_steps: int | None = None,
    ):
        self.rule = rule if isinstance(rule, MetaRule) else get_rule(rule)
        if len(heads) != len(batches) or not heads:
            raise ConfigError(f"need one head and one batch source per task, got {len(heads)} heads and {len(batches)} sources")
        self.num_tasks = len(heads)
        self.num_tasks_total = num_tasks_total or self.num_tasks
        self.reset_period = int(self.rule.reset_period or reset_period)
        self.meta_interval = int(meta_interval or self.rule.meta_interval or self.reset_period)
        self.shift = self.rule.shift if shift is None else bool(shift)
        if self.reset_period < 1 or self.meta_interval < 1:
            raise ConfigError(f"reset_period and meta_interval must be >= 1, got {self.reset_period} and {self.meta_interval}")
        if self.meta_interval > self.reset_period:
            raise ConfigError(
                f"meta_interval ({self.meta_interval}) is larger than the reset period K ({self.reset_period}): "
                "trajectories would reset before any meta-update; use meta_interval <= reset_period"
            )
        if reset not in ("soft", "hard"):
            raise ConfigError(f"reset must be 'soft' or 'hard', got '{reset}'")
        self.hard_reset = reset == "hard"
        self.reset_heads = reset_heads
        self.loss_fn = loss_fn
        self.all_reduce = all_reduce
        self.autocast = autocast or contextlib.nullcontext
        self.batches = list(batches)
        # FOMAML's held-out batches (one source per task, e.g. a validation split); None: fresh training batches.
        self.heldout_batches = list(heldout_batches) if heldout_batches is not None else None
        if self.heldout_batches is not None and len(self.heldout_batches) != len(self.batches):
            raise ConfigError(f"need one held-out batch source per task, got {len(self.heldout_batches)} for {len(self.batches)} tasks")
        self.heads = list(heads)
        self.inner_spec = OptimizerSpec.from_dict(inner_optimizer or INNER_OPTIMIZER)
        self.meta_spec = OptimizerSpec.from_dict(meta_optimizer or META_OPTIMIZER)
        self.step_count = 0

        excluded = [re.compile(p) for p in meta_exclude]
        meta_named = [(n, p) for n, p in backbone.named_parameters() if not any(r.search(n) for r in excluded)]
        if not meta_named:
            raise ConfigError("no backbone parameter is meta-learned: meta_exclude matches all of them")
        self.layout = FlatLayout(meta_named)
        meta_names = set(self.layout.names)

        # phi: fp32 even under mixed precision, because beta * (phi - theta) is tiny.
        self.phi = nn.Parameter(self.layout.flatten([p for _, p in meta_named]))
        self.phi_module = backbone
        self.layout.bind([p for _, p in meta_named], self.phi.data)
        device = self.phi.device
        self.thetas = torch.empty(self.num_tasks, self.layout.size, device=device, dtype=self.phi.dtype)
        self.grads = torch.zeros_like(self.thetas)
        self.backbones: list[nn.Module] = []
        self.private_params: list[list[nn.Parameter]] = []  # per task: heads and excluded params (zeroed per step)
        self.optimizers: list[torch.optim.Optimizer] = []
        # Per task, one flat parameter over its row of thetas (gradient: its row of grads): the inner optimizer
        # updates all meta-learned tensors of a task in a few vector operations instead of a loop over tensors.
        # The update is elementwise, so it is the same as with one optimizer entry per tensor.
        self.flat_params: list[nn.Parameter] = []
        for t in range(self.num_tasks):
            model = copy.deepcopy(backbone).train()
            named = dict(model.named_parameters())
            meta_params = [named[n] for n in self.layout.names]
            self.layout.bind(meta_params, self.thetas[t], self.grads[t])
            private = [p for n, p in named.items() if n not in meta_names] + list(self.heads[t].parameters())
            flat = nn.Parameter(self.thetas[t])  # shares the row's storage
            flat.grad = self.grads[t]
            self.backbones.append(model)
            self.private_params.append(private)
            self.flat_params.append(flat)
            # capturable on CUDA: Adam's step count on the device (no host read, maskable, graph-safe)
            self.optimizers.append(self.inner_spec.build([flat] + private, capturable=device.type == "cuda"))
        self.meta_optimizer = self.meta_spec.build([self.phi], capturable=device.type == "cuda")
        self.scalers = [torch.amp.GradScaler(device.type) for _ in range(self.num_tasks)] if grad_scaling else None
        self.skip_counts = torch.zeros(self.num_tasks, dtype=torch.long, device=device)
        self.skip_streak = torch.zeros(self.num_tasks, dtype=torch.long, device=device)
        self._thetas_snapshot = torch.empty_like(self.thetas)
        self.channels_last = bool(channels_last)
        # On the CPU a host read costs nothing (there is no asynchronous device to wait for), while undoing a skipped
        # task's inner step with torch.where costs a snapshot and a select over every parameter and state tensor; so
        # there the inner steps of a step without a skip run unmasked. sync_free=True forces the device-side path
        # (the CUDA default; tests set it to check that path on the CPU).
        self.sync_free = device.type != "cpu"

        self._direction = torch.empty(self.layout.size, dtype=REDUCE_DTYPE, device=device)
        self._batched = None
        self._batched_checked = False
        self._requested_batched = execution == "batched"
        self.execution, reason = self._choose_execution(execution, backbone, device)
        log.info("execution: %s (%s)", self.execution, reason)

        # Every task's buffers (BN running statistics) in one flat tensor per dtype: copied aside before each
        # forward (one copy per dtype) and restored on the device for tasks whose step is skipped. Built after
        # _choose_execution, whose stacked buffers (batched) become blocks of the flat tensors.
        self._buffers = TaskBuffers([(self.backbones[t], self.heads[t]) for t in range(self.num_tasks)], device,
                                    rebind=self._batched.rebind_buffer if self._batched is not None else None)

        self._leap = None
        if self.rule.direction == "path_length":
            self._leap = {
                "acc": torch.zeros_like(self.thetas), "prev_thetas": torch.zeros_like(self.thetas),
                "prev_grads": torch.zeros_like(self.thetas), "prev_losses": torch.zeros(self.num_tasks, device=device),
                "segments": 0, "has_prev": False,
            }

        self.planned_steps = planned_steps
        self._auto_compile = None  # compiled.AutoCompile while compile 'auto' decides on the CPU
        self._compiled_forward = None
        self._input_shape = None
        self.compile = self._choose_compile(compile)
        self._capture = None
        self._compiled_body = None

    # ------------------------------------------------------------------ the loop
    def step(self) -> StepResult:
        """One global step: an inner step on every task, then the meta-update and reset when due.

        Nothing here reads a device value on the host (except fp16 loss scaling): skipped tasks are masked on the
        device, and the results stay device tensors."""
        self.step_count += 1
        meta_due = self.rule.direction != "none" and self.step_count % self.meta_interval == 0
        if self.compile == "graphs":
            if self._capture is None:
                self._capture = CapturedStep(lambda due: self._step_body(due, draw=True), self.batches,
                                             self.phi.device)
            losses, accuracies, finite, delta = self._capture(meta_due)
        elif self.compile == "inductor":
            if self._compiled_body is None:
                self._compiled_body = torch.compile(self._step_body, mode="reduce-overhead", dynamic=False)
            for source in self.batches:
                source.prepare()
            losses, accuracies, finite, delta = self._compiled_body(meta_due, draw=True)
            for source in self.batches:
                source.advance()
        elif self._auto_compile is not None:
            self._backbone_compiled = self._auto_compile.use_compiled()
            started = time.perf_counter()
            losses, accuracies, finite, delta = self._step_body(meta_due)
            self._auto_compile.done(time.perf_counter() - started)
            if self._auto_compile.phase in ("on", "off"):
                self.compile = "backbone" if self._auto_compile.phase == "on" else "off"
                self._backbone_compiled = self.compile == "backbone"
                self._auto_compile = None
        else:
            losses, accuracies, finite, delta = self._step_body(meta_due)
        reset_due = self.rule.direction != "none" and self.step_count % self.reset_period == 0
        if reset_due:
            self.reset_trajectories()
        return StepResult(self.step_count, losses, meta_due, reset_due, delta, accuracies, ~finite)

    def _step_body(self, meta_due: bool, draw: bool = False) -> tuple:
        """The device work of one global step: forward/backward of every task, the non-finite mask, the (masked)
        inner steps, and the meta-update with the shift when ``meta_due``. This is what ``compile`` captures or
        compiles, so it depends on no host state that changes from step to step (``meta_due`` selects the graph).
        ``draw``: batches come from the sources' ``draw()`` (device only; the caller runs ``prepare``/``advance``).
        Returns (losses, accuracies, finite mask, delta)."""
        self._buffers.snapshot()
        batches = [source.draw() for source in self.batches] if draw else None
        losses, accuracies = self._forward_backward(batches)
        finite = self._finite_mask(losses)
        if self._leap is not None:
            # A skipped task did not move: record it as a zero-length segment rather than a NaN one.
            self._leap_record(torch.where(finite, losses, self._leap["prev_losses"]))
        if self.scalers is None and not self.sync_free and bool(finite.all()):
            for opt in self.optimizers:  # the CPU, no task skipped (see sync_free)
                opt.step()
        elif self.scalers is None:
            masked_optimizer_step(self.optimizers, finite, self.thetas, self._thetas_snapshot, self.private_params)
        else:
            # fp16 loss scaling: GradScaler decides on the host anyway (its step reads the overflow check).
            for t, ok in enumerate(finite.tolist()):
                if ok:
                    self.scalers[t].step(self.optimizers[t])  # gradients were unscaled and checked in _finite_mask
                    self.scalers[t].update()
        delta = self._meta_step() if meta_due else None
        return losses, accuracies, finite, delta

    # ------------------------------------------------------------------ non-finite bookkeeping
    @property
    def skipped_steps(self) -> list[int]:
        """Skipped steps per local task (a host read of ``skip_counts``)."""
        return self.skip_counts.tolist()

    @property
    def nonfinite_streak(self) -> list[int]:
        """Current run of skipped steps per local task (a host read of ``skip_streak``)."""
        return self.skip_streak.tolist()

    # ------------------------------------------------------------------ execution
    def _choose_compile(self, mode: str) -> str:
        """``off``, ``graphs`` or ``inductor``; ``graphs`` where it cannot run is a ConfigError saying why."""
        if mode not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_MODES)}, got '{mode}'")
        self._backbone_compiled = mode == "backbone"
        if mode == "auto" and self.phi.device.type == "cpu" and self.execution == "sequential" and self.planned_steps:
            autocast = self.autocast is not contextlib.nullcontext
            self._auto_compile = AutoCompile(lambda: max(self.planned_steps - self.step_count, 0),
                                             lambda: graph_key(self.phi_module, self._input_shape or (), autocast))
            return "off"  # until AutoCompile has measured (engine.compile then says what it chose)
        if mode in ("auto", "off"):
            return "off"  # auto on CUDA: eager until a GPU measurement says otherwise (benchmarks/RESULTS.md)
        if mode == "backbone":
            if self.execution != "sequential":
                raise ConfigError("compile 'backbone' compiles each task's own forward and runs with execution "
                                  "'sequential'; use execution 'sequential' (or compile 'off' with batched execution)")
            log.info("compile: backbone")
            return mode
        why = None
        if mode == "graphs" and self.phi.device.type != "cuda":
            why = f"CUDA graphs need a CUDA device (this engine is on {self.phi.device.type})"
        elif self.rule.direction not in ("trajectory", "gradient", "none"):
            why = f"rule '{self.rule.name}' runs extra forwards with host-side bookkeeping at its meta-step"
        elif self.scalers is not None:
            why = "fp16 loss scaling decides on the host (use mixed_precision bf16)"
        elif self.all_reduce is not None:
            why = "more than one process (the all-reduce is not captured)"
        elif not all(callable(getattr(s, "draw", None)) and callable(getattr(s, "prepare", None))
                     and callable(getattr(s, "advance", None)) for s in self.batches):
            why = "the batch sources do not draw on the device (use ctinit.tasks.DeviceBatchSampler)"
        if why is not None:
            raise ConfigError(f"compile '{mode}' is not supported here: {why}; use compile 'off'")
        if mode == "graphs":
            # torch's advice for autocast in captured regions: no cast cache (it would keep graph-pool tensors)
            factory = self.autocast

            def uncached():
                context = factory()
                if isinstance(context, torch.autocast):
                    context._cache_enabled = False
                return context
            self.autocast = uncached
        log.info("compile: %s", mode)
        return mode

    def _choose_execution(self, execution: str, backbone: nn.Module, device: torch.device) -> tuple[str, str]:
        from .batched import BatchedTasks, unsupported_reason

        if execution not in EXECUTIONS:
            raise ConfigError(f"execution must be one of {', '.join(EXECUTIONS)}, got '{execution}'")
        if execution == "sequential":
            return "sequential", "requested"
        if execution == "auto" and device.type != "cuda":
            return "sequential", f"auto: sequential on {device.type}, where batched measured no faster (benchmarks/RESULTS.md)"
        if execution == "auto" and self.num_tasks < 2:
            return "sequential", "auto: one local task"
        if self.loss_fn is not classification_loss:
            why = "a custom loss function"
        elif self.scalers is not None:
            why = "fp16 loss scaling (one scaler per task)"
        else:
            why = unsupported_reason(backbone, self.heads)
        if why is not None:
            if execution == "batched":
                raise ConfigError(f"execution 'batched' is not supported here: {why}; use execution 'sequential' or 'auto'")
            return "sequential", f"auto: cannot batch: {why}"
        meta_slices = {n: (o, k) for n, o, k in zip(self.layout.names, self.layout.offsets, self.layout.numels)}
        self._batched = BatchedTasks(backbone, self.backbones, self.heads, self.thetas, self.grads, meta_slices,
                                     channels_last=self.channels_last)
        return "batched", "requested" if execution == "batched" else f"auto: {self.num_tasks} same-shape tasks on {device.type}"

    def _run_batched(self, batches) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One batched forward/backward, or None when this step cannot run batched (then it runs sequentially)."""
        if not self._batched.ready(batches):
            return None
        if not self._batched_checked:
            why = self._batched.check(batches)
            self._batched_checked = True
            if why is not None:
                if self._requested_batched:
                    raise ConfigError(f"execution 'batched' is not supported here: {why}; use execution 'sequential' or 'auto'")
                log.warning("execution: sequential (auto: cannot batch: %s)", why)
                self.execution, self._batched = "sequential", None
                return None
        return self._batched.forward_backward(batches, self.autocast)

    def _forward_backward(self, batches: Sequence | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gradients of every task's loss at its current theta, into ``self.grads`` (and the private params).
        Returns the losses (and accuracies, if the loss function reports them) per local task."""
        self.grads.zero_()
        for flat, grad in zip(self.flat_params, self.grads):
            flat.grad = grad  # (again: an optimizer's zero_grad() elsewhere would have unset it)
        if self._batched is not None:
            if batches is None:
                batches = [source() for source in self.batches]
            for t in range(self.num_tasks):
                for p in self.private_params[t]:
                    p.grad = None
            out = self._run_batched(batches)
            if out is not None:
                return out
        losses, accuracies = [], []
        for t in range(self.num_tasks):
            for p in self.private_params[t]:
                p.grad = None
            batch = self.batches[t]() if batches is None else batches[t]
            if self.channels_last and isinstance(batch, (tuple, list)) and torch.is_tensor(batch[0]) and batch[0].dim() == 4:
                batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
            if self._input_shape is None and isinstance(batch, (tuple, list)) and torch.is_tensor(batch[0]):
                self._input_shape = tuple(batch[0].shape)  # part of compile 'auto''s record key
            with self.autocast():
                loss, accuracy = _split_loss(self.loss_fn(self._task_backbone(t), self.heads[t], batch))
            (loss if self.scalers is None else self.scalers[t].scale(loss)).backward()
            losses.append(loss.detach().float())
            if accuracy is not None:
                accuracies.append(accuracy.float())
        if self.scalers is not None:
            for t, opt in enumerate(self.optimizers):
                self.scalers[t].unscale_(opt)  # self.grads now holds true gradients (the meta rules read them)
        return torch.stack(losses), (torch.stack(accuracies) if accuracies else None)

    def _task_backbone(self, t: int):
        """Task t's backbone as the loss function calls it: the module, or it through the compiled forward."""
        if not self._backbone_compiled:
            return self.backbones[t]
        if self._compiled_forward is None:
            self._compiled_forward = compile_forward()
        return CompiledBackbone(self.backbones[t], self._compiled_forward)

    def _finite_mask(self, losses: torch.Tensor) -> torch.Tensor:
        """The bool mask of tasks whose loss (and, with loss scaling, gradient row) is finite, on the device; the
        others are neutralized there: gradient row zeroed, buffers restored to the last snapshot, counted.
        (Their inner step is undone by ``masked_optimizer_step``.) No host sync, except for fp16 loss scaling."""
        finite = torch.isfinite(losses)
        if self.scalers is not None:
            finite &= torch.isfinite(self.grads).all(1)
        bad = ~finite
        self.skip_counts.add_(bad)
        self.skip_streak.add_(1).mul_(bad)
        self.grads.masked_fill_(bad[:, None], 0)
        self._buffers.restore(finite)  # undo the forward's update of the running statistics
        if self.scalers is not None:
            for t, skipped in enumerate(bad.tolist()):
                if skipped:
                    self.scalers[t].update(self.scalers[t].get_scale() * self.scalers[t].get_backoff_factor())
        return finite

    def _snapshot_buffers(self) -> None:
        """Copy every task's buffers (BN running statistics) aside before a training-mode forward."""
        self._buffers.snapshot()

    def _global_mean(self, local_sum: torch.Tensor) -> torch.Tensor:
        if self.all_reduce is not None:
            self.all_reduce(local_sum)
        return (local_sum / self.num_tasks_total).to(self.phi.dtype)

    def _meta_step(self) -> torch.Tensor:
        direction = self.rule.direction
        if direction == "trajectory":
            local = trajectory_direction(self.phi.detach(), self.thetas, out=self._direction)
        elif direction == "gradient":
            # Gradients of this step's inner losses at the pre-step thetas (== phi for MTL).
            local = gradient_direction(self.grads)
        elif direction == "heldout_gradient":
            self._snapshot_buffers()
            # Fresh batches (from the held-out sources if given) at the current thetas; no inner step follows.
            heldout = [source() for source in self.heldout_batches] if self.heldout_batches is not None else None
            losses, _ = self._forward_backward(heldout)
            # A non-finite held-out loss (or gradient): that task's row of grads is zeroed and its BN statistics
            # restored, so the value never reaches phi (it counts as a skipped step of that task).
            finite = self._finite_mask(losses)
            if self.scalers is not None:
                for t, (scaler, ok) in enumerate(zip(self.scalers, finite.tolist())):
                    if ok:  # _finite_mask already updated the others' scales
                        scaler.update()
            local = gradient_direction(self.grads)
        elif direction == "path_length":
            local = self._leap_direction()
        else:  # pragma: no cover - guarded by get_rule
            raise ConfigError(f"rule '{self.rule.name}' has no meta direction")
        g = self._global_mean(local)
        if self.shift:
            return cts_update(self.phi, self.thetas, self.meta_optimizer, direction=g)
        return meta_update(self.phi, g, self.meta_optimizer)

    def reset_trajectories(self) -> None:
        """``theta_t <- phi`` for every task; a hard reset also clears inner optimizer state (and heads if asked)."""
        self.thetas.copy_(self.phi.detach().expand_as(self.thetas))
        if self.hard_reset:
            for t, opt in enumerate(self.optimizers):
                opt.state.clear()
                if self.reset_heads:
                    for m in self.heads[t].modules():
                        if hasattr(m, "reset_parameters"):
                            m.reset_parameters()
        if self._leap is not None:
            self._leap["has_prev"] = False  # a new trajectory starts: no open segment
        if self.hard_reset and self._capture is not None:
            self._capture.invalidate()  # the cleared optimizer state is created anew by eager warm-up steps

    # ------------------------------------------------------------------ Leap bookkeeping
    def _leap_record(self, losses: torch.Tensor) -> None:
        """Close the previous segment with this step's loss, then remember (theta, grad, loss) at this step."""
        s = self._leap
        if s["has_prev"]:
            path_length_segment(s["acc"], s["prev_thetas"], self.thetas, s["prev_grads"], s["prev_losses"], losses)
            s["segments"] += 1
        s["prev_thetas"].copy_(self.thetas)
        s["prev_grads"].copy_(self.grads)
        s["prev_losses"].copy_(losses)
        s["has_prev"] = True

    def _leap_direction(self) -> torch.Tensor:
        # The last segment ends at the current thetas; its end loss comes from one extra forward on a fresh batch.
        self._snapshot_buffers()
        with torch.no_grad():
            end_losses = torch.stack([
                _split_loss(self.loss_fn(self.backbones[t], self.heads[t], self.batches[t]()))[0].detach().float()
                for t in range(self.num_tasks)
            ])
        finite = torch.isfinite(end_losses)
        # a non-finite end loss: a zero-length last segment, statistics as before (masked on the device)
        self._buffers.restore(finite)
        end_losses = torch.where(finite, end_losses, self._leap["prev_losses"])
        self._leap_record(end_losses)
        s = self._leap
        # Averaged over segments so that the step size does not grow with K.
        direction = torch.sum(s["acc"], 0, dtype=REDUCE_DTYPE) / max(s["segments"], 1)
        s["acc"].zero_()
        s["segments"] = 0
        return direction

    # ------------------------------------------------------------------ results
    def phi_state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone's state at phi (parameters and buffers of the initialization), detached copies."""
        return {k: v.detach().clone() for k, v in self.phi_module.state_dict().items()}

    def task_model(self, t: int) -> tuple[nn.Module, nn.Module]:
        return self.backbones[t], self.heads[t]

    # ------------------------------------------------------------------ checkpoints
    def _optimizer_state(self, t: int) -> dict:
        """Task t's inner optimizer state in the per-tensor format (one entry per meta-learned parameter tensor,
        in layout order, then the private parameters), as if every tensor had its own optimizer entry."""
        state = self.optimizers[t].state_dict()
        m = len(self.layout.names)
        groups = copy.deepcopy(state["param_groups"])
        remap = lambda i: list(range(m)) if i == 0 else [m + i - 1]  # noqa: E731
        for group in groups:
            group["params"] = [j for i in group["params"] for j in remap(i)]
        out = {}
        for i, s in state["state"].items():
            if i != 0:
                out[m + i - 1] = copy.deepcopy(s)
                continue
            for j, (o, n, shape) in enumerate(zip(self.layout.offsets, self.layout.numels, self.layout.shapes)):
                out[j] = {k: (v[o:o + n].view(shape).clone() if torch.is_tensor(v) and v.dim() == 1 and v.numel() == self.layout.size
                              else copy.deepcopy(v)) for k, v in s.items()}
        return {"state": dict(sorted(out.items())), "param_groups": groups}

    def _flat_optimizer_state(self, t: int, state: dict) -> dict:
        """The inverse of ``_optimizer_state``: per-tensor entries of the meta-learned tensors joined into the flat
        parameter's entry. A state already in the flat format passes through."""
        m, k = len(self.layout.names), len(self.private_params[t])
        saved_ids = [i for g in state["param_groups"] for i in g["params"]]
        if len(saved_ids) != m + k:
            if len(saved_ids) == 1 + k:
                return state
            raise ConfigError(f"task {t}'s inner optimizer state holds {len(saved_ids)} parameters, expected {m + k}")
        entries = [state["state"].get(i) for i in saved_ids[:m]]
        out = {}
        if any(e is not None for e in entries):
            if any(e is None for e in entries):
                raise ConfigError(f"task {t}'s inner optimizer state covers only some meta-learned parameters")
            out[0] = {key: (torch.cat([e[key].reshape(-1) for e in entries]) if torch.is_tensor(v) and v.dim() > 0 else v)
                      for key, v in entries[0].items()}
        for new_id, i in enumerate(saved_ids[m:], start=1):
            if i in state["state"]:
                out[new_id] = state["state"][i]
        meta_ids, private_ids = set(saved_ids[:m]), {i: j for j, i in enumerate(saved_ids[m:], start=1)}
        groups = []
        for g in state["param_groups"]:
            new_ids = ([0] if any(i in meta_ids for i in g["params"]) else []) + [private_ids[i] for i in g["params"] if i in private_ids]
            groups.append({**g, "params": new_ids})
        return {"state": out, "param_groups": groups}

    def state_dict(self) -> dict:
        """Everything the engine needs to continue bit for bit: phi, meta optimizer, and per local task the
        backbone state (theta, excluded parameters, BN statistics), head, inner optimizer and loss scaler."""
        tasks = []
        for t in range(self.num_tasks):
            tasks.append({
                "backbone": {k: v.detach().clone() for k, v in self.backbones[t].state_dict().items()},
                "head": {k: v.detach().clone() for k, v in self.heads[t].state_dict().items()},
                # per-tensor format, copies: optimizers update their state tensors in place
                "optimizer": self._optimizer_state(t),
                "scaler": copy.deepcopy(self.scalers[t].state_dict()) if self.scalers is not None else None,
                "skipped_steps": int(self.skip_counts[t]),
                "nonfinite_streak": int(self.skip_streak[t]),
            })
        state = {"step": self.step_count, "phi": self.phi.detach().clone(),
                 "meta_optimizer": copy.deepcopy(self.meta_optimizer.state_dict()), "tasks": tasks}
        if self._leap is not None:
            state["leap"] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self._leap.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        if len(state["tasks"]) != self.num_tasks:
            raise ConfigError(f"checkpoint holds {len(state['tasks'])} local tasks, this engine has {self.num_tasks}")
        self.step_count = int(state["step"])
        with torch.no_grad():
            self.phi.copy_(state["phi"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        for t, task in enumerate(state["tasks"]):
            self.backbones[t].load_state_dict(task["backbone"])  # copies in place: theta views stay views
            self.heads[t].load_state_dict(task["head"])
            self.optimizers[t].load_state_dict(self._flat_optimizer_state(t, task["optimizer"]))
            if self.scalers is not None and task.get("scaler"):
                self.scalers[t].load_state_dict(task["scaler"])
            self.skip_counts[t] = int(task["skipped_steps"])
            self.skip_streak[t] = int(task["nonfinite_streak"])
        if self._capture is not None:
            self._capture.invalidate()  # the loaded optimizer state consists of new tensors
        if self._leap is not None and "leap" in state:
            for k, v in state["leap"].items():
                if torch.is_tensor(v):
                    self._leap[k].copy_(v)
                else:
                    self._leap[k] = v

    # ------------------------------------------------------------------ task pools: another task into a slot
    # The trainer's task pools (training/pool.py) train more tasks than there are slots: at a reset, when every
    # theta_t == phi, a slot's task leaves (``task_state``) and another task comes in (``set_task``). The engine
    # knows nothing about which task is where; these two methods are all it offers.
    def task_state(self, t: int) -> dict:
        """Slot t's task-private state, as CPU copies: the backbone state that is not meta-learned (parameters
        kept per task by ``meta_exclude``, BN running statistics), the head, the inner optimizer state
        (per-tensor format), the loss scaler and the skip counters. theta is left out: a task leaves its slot at a
        reset, where theta_t == phi."""
        meta = set(self.layout.names)
        cpu = lambda v: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else copy.deepcopy(v)  # noqa: E731
        optimizer = self._optimizer_state(t)
        return {
            "backbone": {k: cpu(v) for k, v in self.backbones[t].state_dict().items() if k not in meta},
            "head": {k: cpu(v) for k, v in self.heads[t].state_dict().items()},
            "optimizer": {"state": {i: {k: cpu(v) for k, v in s.items()} for i, s in optimizer["state"].items()},
                          "param_groups": optimizer["param_groups"]},
            "scaler": copy.deepcopy(self.scalers[t].state_dict()) if self.scalers is not None else None,
            "skipped_steps": self.skipped_steps[t],
            "nonfinite_streak": self.nonfinite_streak[t],
        }

    def set_task(self, t: int, head: nn.Module, batches: Callable[[], object], state: dict | None = None) -> None:
        """Put another task into slot t: its head (any number of classes), its batch source and its state from
        ``task_state`` (None: a task's first turn: the initialization's non-meta-learned backbone state, fresh
        inner optimizer state and loss scaler). Call it right after a reset, when theta_t == phi."""
        if any(True for _ in head.buffers()):
            raise ConfigError("a task head with buffers cannot be swapped into a slot; use a plain linear head")
        device = self.phi.device
        head = head.to(device).train()
        if self._batched is not None:
            self._batched.set_head(t, head)
        self.heads[t] = head
        self.batches[t] = batches
        meta = set(self.layout.names)
        model = self.backbones[t]
        private = [p for n, p in model.named_parameters() if n not in meta] + list(head.parameters())
        self.private_params[t] = private
        self.optimizers[t] = self.inner_spec.build([self.flat_params[t]] + private, capturable=device.type == "cuda")
        if self.scalers is not None:
            self.scalers[t] = torch.amp.GradScaler(device.type)
        if state is None:
            initial = {k: v for k, v in self.phi_module.state_dict().items() if k not in meta}
            state = {"backbone": initial, "optimizer": None, "scaler": None, "skipped_steps": 0, "nonfinite_streak": 0}
        else:
            head.load_state_dict(state["head"])
            self.optimizers[t].load_state_dict(self._flat_optimizer_state(t, state["optimizer"]))
        missing, unexpected = model.load_state_dict(state["backbone"], strict=False)  # copies in place: views stay
        if unexpected or set(missing) != meta:
            raise ConfigError(f"slot {t}: the stored task state does not fit the backbone "
                              f"(unexpected {sorted(unexpected)[:3]}, missing {sorted(set(missing) - meta)[:3]})")
        if self.scalers is not None and state.get("scaler"):
            self.scalers[t].load_state_dict(state["scaler"])
        self.skip_counts[t] = int(state["skipped_steps"])
        self.skip_streak[t] = int(state["nonfinite_streak"])
        # A captured or compiled step holds the old head's and optimizer's tensors: capture again on the next step.
        self._capture = None
        self._compiled_body = None
