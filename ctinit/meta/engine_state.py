"""What a checkpoint or a task pool takes out of a ``TrajectoryEngine`` and puts back into it.

``state_dict``/``load_state_dict``: everything the engine needs to continue bit for bit. ``task_state``/``set_task``:
one slot's task-private state, for the trainer's task pools (training/pool.py), which train more tasks than there
are slots: at a reset, when every theta_t == phi, a slot's task leaves and another comes in. Inner optimizer states
are kept in the per-tensor format (``layout.py``).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .layout import flat_state, per_tensor_state


class EngineState:
    """The state methods of ``TrajectoryEngine`` (a mixin: it reads the engine's attributes)."""

    @property
    def skipped_steps(self) -> list[int]:
        """Skipped steps per local task (a host read of ``skip_counts``)."""
        return self.skip_counts.tolist()

    @property
    def nonfinite_streak(self) -> list[int]:
        """Current run of skipped steps per local task (a host read of ``skip_streak``)."""
        return self.skip_streak.tolist()

    def _optimizer_state(self, t: int) -> dict:
        """Task t's inner optimizer state in the per-tensor format (``layout.per_tensor_state``)."""
        return per_tensor_state(self.optimizers[t].state_dict(), self.layout)

    def _flat_optimizer_state(self, t: int, state: dict) -> dict:
        return flat_state(state, self.layout, len(self.private_params[t]), t)

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
            state["leap"] = self._leap.state_dict()
        # what channels_last and compile 'auto' decided (or measured so far): a resumed run runs as this one would
        state.update(self._measured_state())
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
            self._leap.load_state_dict(state["leap"])
        self._load_measured_state(state)

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
