"""How the engine runs a global step: the execution and compile choices, as pure functions of the setting.

``execution``: ``sequential`` runs the tasks' forward/backward one after another; ``batched`` runs them as one
program on stacked parameters (``batched.py``); ``auto`` picks batched on CUDA and sequential on the CPU, where
grouped kernels measured slower (benchmarks/RESULTS.md), and falls back to sequential where batching is not possible.

``compile``: ``graphs`` replays the step as a CUDA graph and ``inductor`` is ``torch.compile(mode="reduce-overhead")``
of the step (``device_step.py``); ``backbone`` compiles every task's backbone forward and backward (one graph shared
by the tasks; sequential execution; ``compiled.py``). ``auto`` is ``backbone`` on the CPU where the run's own timings
show it pays off (``compiled.AutoCompile``), else ``off``: on CUDA until a GPU measurement shows a mode faster
(benchmarks/RESULTS.md, "GPU plan").
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError

EXECUTIONS = ("auto", "sequential", "batched")
COMPILE_MODES = ("auto", "off", "graphs", "inductor", "backbone")


def choose_execution(requested: str, device: torch.device, num_tasks: int, custom_loss: bool, loss_scaling: bool,
                     backbone: nn.Module, heads: Sequence[nn.Module]) -> tuple[str, str]:
    """``(execution, reason)``: ``sequential`` or ``batched``, and why (for the log). ``batched`` requested where it
    cannot run is a ConfigError saying why; ``auto`` falls back to sequential."""
    from .batched import unsupported_reason

    if requested not in EXECUTIONS:
        raise ConfigError(f"execution must be one of {', '.join(EXECUTIONS)}, got '{requested}'")
    if requested == "sequential":
        return "sequential", "requested"
    if requested == "auto" and device.type != "cuda":
        return "sequential", f"auto: sequential on {device.type}, where batched measured no faster (benchmarks/RESULTS.md)"
    if requested == "auto" and num_tasks < 2:
        return "sequential", "auto: one local task"
    if custom_loss:
        why = "a custom loss function"
    elif loss_scaling:
        why = "fp16 loss scaling (one scaler per task)"
    else:
        why = unsupported_reason(backbone, heads)
    if why is not None:
        if requested == "batched":
            raise ConfigError(f"execution 'batched' is not supported here: {why}; use execution 'sequential' or 'auto'")
        return "sequential", f"auto: cannot batch: {why}"
    return "batched", "requested" if requested == "batched" else f"auto: {num_tasks} same-shape tasks on {device.type}"


def measures_compile(mode: str, device: torch.device, execution: str, planned_steps: int | None) -> bool:
    """Whether ``compile: auto`` measures this run (CPU, sequential, a known number of steps) to decide on
    ``backbone``; elsewhere ``auto`` is ``off``."""
    return mode == "auto" and device.type == "cpu" and execution == "sequential" and bool(planned_steps)


def choose_compile(mode: str, device: torch.device, execution: str, rule_direction: str, rule_name: str,
                   loss_scaling: bool, multi_process: bool, batch_sources: Sequence) -> str:
    """``off``, ``backbone``, ``graphs`` or ``inductor`` (``auto``: ``off`` until measured, see
    :func:`measures_compile`); a mode where it cannot run is a ConfigError saying why."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile must be one of {', '.join(COMPILE_MODES)}, got '{mode}'")
    if mode in ("auto", "off"):
        return "off"
    if mode == "backbone":
        if execution != "sequential":
            raise ConfigError("compile 'backbone' compiles each task's own forward and runs with execution "
                              "'sequential'; use execution 'sequential' (or compile 'off' with batched execution)")
        return mode
    why = None
    if mode == "graphs" and device.type != "cuda":
        why = f"CUDA graphs need a CUDA device (this engine is on {device.type})"
    elif rule_direction not in ("trajectory", "gradient", "none"):
        why = f"rule '{rule_name}' runs extra forwards with host-side bookkeeping at its meta-step"
    elif loss_scaling:
        why = "fp16 loss scaling decides on the host (use mixed_precision bf16)"
    elif multi_process:
        why = "more than one process (the all-reduce is not captured)"
    elif not all(callable(getattr(s, "draw", None)) and callable(getattr(s, "prepare", None))
                 and callable(getattr(s, "advance", None)) for s in batch_sources):
        why = "the batch sources do not draw on the device (use ctinit.tasks.DeviceBatchSampler)"
    if why is not None:
        raise ConfigError(f"compile '{mode}' is not supported here: {why}; use compile 'off'")
    return mode


def uncached_autocast(factory: Callable) -> Callable:
    """torch's advice for autocast in captured regions (CUDA graphs): no cast cache (it would keep graph-pool
    tensors)."""
    def uncached():
        context = factory()
        if isinstance(context, torch.autocast):
            context._cache_enabled = False
        return context
    return uncached
