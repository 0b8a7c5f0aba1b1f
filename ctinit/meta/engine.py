"""The trajectory engine: one loop that runs CTS, Reptile, FOMAML, Leap, MTL and independent training.

One global step (see ``TrajectoryEngine.step``):

1. every task takes one inner step: ``(theta_t, h_t) <- O_t(grad L_t(theta_t, h_t; batch_t))``;
2. every ``meta_interval`` steps: ``g = mean_t direction`` over all tasks of all processes,
   ``phi' = meta_optimizer(phi, g)``, and if the rule shifts, ``theta_t += phi' - phi``;
3. every ``reset_period`` (K) steps: ``theta_t <- phi`` (soft: heads, BN statistics and inner optimizer state
   are kept; hard: inner optimizer state is cleared and, with ``reset_heads``, heads are re-initialized).

Flat parameter layout (one ``[T, P]`` buffer of thetas, one of gradients, phi a ``[P]`` vector) and optimizer-state
formats: ``layout.py``; execution and compile choices: ``execution/choices.py``; the memory format and compile choices
measured per run on the CPU (``channels_last``/``compile: auto``): ``measured.py``; checkpoint and task-pool state:
``engine_state.py``; Leap's running state: ``leap.py``. The choices are logged and kept in ``engine.execution``,
``engine.channels_last`` and ``engine.compile``.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import re
from typing import Callable, Sequence

import torch
from torch import nn

from .defaults import INNER_OPTIMIZER, META_OPTIMIZER, RESET_PERIOD
from ..errors import ConfigError
from ..execution.choices import choose_execution
from ..execution.device_step import CapturedStep, TaskBuffers, masked_optimizer_step
from .engine_state import EngineState
from .measured import MeasuredExecution
from .layout import FlatLayout
from .leap import LeapState
from .optim import OptimizerSpec
from .step import LossFn, StepResult, classification_loss, split_loss
from .rules import (REDUCE_DTYPE, MetaRule, cts_update, get_rule, gradient_direction, meta_update, schedule,
                    trajectory_direction)

log = logging.getLogger(__name__)

class TrajectoryEngine(MeasuredExecution, EngineState):
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
        inner_optimizer: the tasks' optimizer, an ``OptimizerSpec`` (or a dict).
        meta_optimizer: the optimizer applied to phi with direction g as its gradient, an ``OptimizerSpec`` (or a dict).
        meta_exclude: regexes of backbone parameter names kept per task instead of meta-learned.
        loss_fn: ``loss_fn(backbone, head, batch) -> scalar``.
        all_reduce: sums a tensor across processes in place (None on one process).
        num_tasks_total: the number of tasks over all processes (default: the local number).
        autocast: a context-manager factory wrapped around each inner forward/backward (mixed precision);
            phi, the meta-update and the shift stay fp32 whatever it does.
        grad_scaling: dynamic loss scaling per task (for fp16).
        execution: ``auto``, ``sequential`` or ``batched`` (see ``execution/choices.py``); ``batched`` is refused with
            a ConfigError where it is not supported, ``auto`` falls back to sequential.
        compile: ``off`` (eager: the reference), ``graphs`` (the whole global step captured as one CUDA graph and
            replayed; CUDA only, batch sources must be ``DeviceBatchSampler``s), ``inductor``
            (``torch.compile(mode="reduce-overhead")`` of the step; see ``execution/device_step.py``),
            ``backbone`` (every task's backbone forward/backward compiled, sequential execution; see
            ``execution/compiled.py``) or ``auto``:
            ``backbone`` on the CPU with sequential execution when ``planned_steps`` is given and this run's timings
            show it pays off, else ``off``.
        planned_steps: the run's total number of global steps (for ``compile: auto``: whether compiling pays off).
        channels_last: run convolutions on channels-last inputs (and, batched, weights); the parameters stay in
            their flat buffers either way. ``auto``: measured on the CPU (sequential, ``planned_steps`` >= 100;
            see ``execution/channels_last.py``), else off.
        heldout_batches: one callable per local task for the ``heldout_gradient`` rule (FOMAML): its held-out
            batch comes from these (e.g. a validation split of the task) instead of a fresh training batch.
        precision: ``auto`` (with ``autocast`` None): bf16 autocast where the CPU has bf16 hardware and the run's
            first steps measure it faster, else fp32 (``precision.py``); ``engine.precision`` says what runs.

    A task whose inner loss (or, with loss scaling, gradient) is not finite skips that step: its parameters,
    optimizer state, gradient row and buffers (BN running statistics, which the forward already updated) are left
    as they were, so the non-finite value never reaches phi or the task's statistics. The skip is a mask on the
    device (``execution/device_step.py``): a step never waits for the device to decide it (except with fp16 loss
    scaling, whose GradScaler reads its overflow check on the host; and on the CPU, where a host read costs nothing,
    a step without a skip runs its inner steps unmasked: ``sync_free``). ``skip_counts`` counts such steps per task
    and ``skip_streak`` the current run of them, as device tensors; ``skipped_steps`` and ``nonfinite_streak`` read
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
        channels_last: bool | str = False,
        heldout_batches: Sequence[Callable[[], object]] | None = None,
        planned_steps: int | None = None,
        precision: str | None = None,
    ):
        self.rule = rule if isinstance(rule, MetaRule) else get_rule(rule)
        if len(heads) != len(batches) or not heads:
            raise ConfigError(f"need one head and one batch source per task, got {len(heads)} heads and {len(batches)} sources")
        self.num_tasks = len(heads)
        self.num_tasks_total = num_tasks_total or self.num_tasks
        self.reset_period, self.meta_interval = schedule(self.rule, reset_period, meta_interval)
        self.shift = self.rule.shift if shift is None else bool(shift)
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
        self.channels_last = channels_last is True  # 'auto' is decided below, once the execution is known
        # On the CPU a host read costs nothing (there is no asynchronous device to wait for), while undoing a skipped
        # task's inner step with torch.where costs a snapshot and a select over every parameter and state tensor; so
        # there the inner steps of a step without a skip run unmasked. sync_free=True forces the device-side path
        # (the CUDA default; tests set it to check that path on the CPU).
        self.sync_free = device.type != "cpu"

        self._direction = torch.empty(self.layout.size, dtype=REDUCE_DTYPE, device=device)
        self._batched = None
        self._batched_checked = False
        self._requested_batched = execution == "batched"
        self.execution, reason = choose_execution(execution, device, self.num_tasks, loss_fn is not classification_loss,
                                                  self.scalers is not None, backbone, self.heads)
        log.info("execution: %s (%s)", self.execution, reason)
        if self.execution == "batched":
            from ..execution.batched import BatchedTasks

            meta_slices = {n: (o, k) for n, o, k in zip(self.layout.names, self.layout.offsets, self.layout.numels)}
            self._batched = BatchedTasks(backbone, self.backbones, self.heads, self.thetas, self.grads, meta_slices,
                                         channels_last=self.channels_last)

        # Every task's buffers (BN running statistics) in one flat tensor per dtype: copied aside before each
        # forward (one copy per dtype) and restored on the device for tasks whose step is skipped. Built after
        # the execution choice, whose stacked buffers (batched) become blocks of the flat tensors.
        self._buffers = TaskBuffers([(self.backbones[t], self.heads[t]) for t in range(self.num_tasks)], device,
                                    rebind=self._batched.rebind_buffer if self._batched is not None else None)

        self._leap = LeapState(self.thetas) if self.rule.direction == "path_length" else None

        self.planned_steps = planned_steps
        self._compiled_forward = None
        self._input_shape = None
        self._compile_requested = compile
        self._choose_precision(precision)  # measured.py: 'auto' measures bf16 on a bf16 CPU (execution/precision.py)
        self.channels_last = self._choose_channels_last(channels_last)  # measured.py: 'auto' measures on the CPU
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
        elif self._measuring:
            losses, accuracies, finite, delta = self._measured_step(meta_due)
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
            self._leap.record(self.thetas, self.grads, torch.where(finite, losses, self._leap.prev_losses))
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

    # ------------------------------------------------------------------ execution
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
                loss, accuracy = split_loss(self.loss_fn(self._task_backbone(t), self.heads[t], batch))
            (loss if self.scalers is None else self.scalers[t].scale(loss)).backward()
            losses.append(loss.detach().float())
            if accuracy is not None:
                accuracies.append(accuracy.float())
        if self.scalers is not None:
            for t, opt in enumerate(self.optimizers):
                self.scalers[t].unscale_(opt)  # self.grads now holds true gradients (the meta rules read them)
        return torch.stack(losses), (torch.stack(accuracies) if accuracies else None)

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
            self._buffers.snapshot()
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
            self._leap.new_trajectory()
        if self.hard_reset and self._capture is not None:
            self._capture.invalidate()  # the cleared optimizer state is created anew by eager warm-up steps

    # ------------------------------------------------------------------ Leap's direction
    def _leap_direction(self) -> torch.Tensor:
        # The last segment ends at the current thetas; its end loss comes from one extra forward on a fresh batch.
        self._buffers.snapshot()
        with torch.no_grad():
            end_losses = torch.stack([
                split_loss(self.loss_fn(self.backbones[t], self.heads[t], self.batches[t]()))[0].detach().float()
                for t in range(self.num_tasks)
            ])
        finite = torch.isfinite(end_losses)
        # a non-finite end loss: a zero-length last segment, statistics as before (masked on the device)
        self._buffers.restore(finite)
        self._leap.record(self.thetas, self.grads, torch.where(finite, end_losses, self._leap.prev_losses))
        return self._leap.take_direction()
