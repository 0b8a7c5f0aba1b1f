"""The engine's measured execution choices: ``mixed_precision: auto`` (``execution/precision.py``),
``channels_last: auto`` (``execution/channels_last.py``) and ``compile: auto`` (``execution/compiled.py``), made from
the run's own first steps on the CPU. The precision is chosen first, then the memory format (its trial steps run eager: it is measured only where ``compile`` is auto or off), then the compile
decision is measured in the chosen memory format, so the compiled graph sees one memory format only.
While either is measuring, every step is timed; each choice is kept in the checkpoint, so a resumed run runs its
steps as the first run would have."""
from __future__ import annotations

import contextlib
import logging
import time

import torch

from ..execution.channels_last import MIN_PLANNED_STEPS, AutoChannelsLast
from ..execution.choices import choose_compile, measures_compile, uncached_autocast
from ..execution.compiled import AutoCompile, CompiledBackbone, compile_forward, graph_key
from ..execution.precision import AutoPrecision, auto_precision_plan, autocast_factory

log = logging.getLogger("ctinit.meta.engine")

#: ``channels_last`` values: a bool, or ``auto`` (measured on the CPU with sequential execution, else off).
CHANNELS_LAST_MODES = (True, False, "auto")


class MeasuredExecution:
    """Mixed into ``TrajectoryEngine``: sets ``channels_last``, ``compile`` and ``_backbone_compiled``."""

    def _choose_channels_last(self, mode) -> bool:
        """The memory format to start with; ``auto`` on the CPU with sequential execution, ``compile`` auto or off and
        a run of at least MIN_PLANNED_STEPS starts an ``AutoChannelsLast`` (elsewhere ``auto`` is contiguous)."""
        if mode not in CHANNELS_LAST_MODES:
            from ..errors import ConfigError
            raise ConfigError(f"channels_last must be true, false or auto, got {mode!r}")
        self._channels_last_requested = mode
        self._auto_channels_last = None
        # only where the trial's steps run eager (a compiled graph would be traced again for the other memory format)
        if mode == "auto" and self.phi.device.type == "cpu" and self.execution == "sequential" \
                and self._compile_requested in ("auto", "off") and (self.planned_steps or 0) >= MIN_PLANNED_STEPS:
            self._auto_channels_last = AutoChannelsLast(lambda: graph_key(self.phi_module, self._input_shape or (),
                                                             self.autocast is not contextlib.nullcontext))
        return mode is True

    def _choose_compile(self, mode: str) -> str:
        """The compile mode to start with (``choices.choose_compile``); ``auto`` measured on the CPU starts ``off``
        with an ``AutoCompile`` that decides later (``engine.compile`` then says what it chose)."""
        device = self.phi.device
        chosen = choose_compile(mode, device, self.execution, self.rule.direction, self.rule.name,
                                self.scalers is not None, self.all_reduce is not None, self.batches)
        self._auto_compile = None
        if measures_compile(mode, device, self.execution, self.planned_steps):
            # the precision and the memory format are part of what was measured (both are decided first)
            self._auto_compile = AutoCompile(lambda: max(self.planned_steps - self.step_count, 0),
                                             lambda: graph_key(self.phi_module, self._input_shape or (),
                                                               self.autocast is not contextlib.nullcontext)
                                             + (":channels_last" if self.channels_last else ""))
        self._backbone_compiled = chosen == "backbone"
        if chosen == "graphs":
            self.autocast = uncached_autocast(self.autocast)
        if chosen != "off":
            log.info("compile: %s", chosen)
        return chosen

    def _choose_precision(self, mode: str | None) -> None:
        """``mixed_precision: auto`` (``precision.py``): fp32 to start with, and an ``AutoPrecision`` trial where
        the CPU has bf16 hardware and the run is measurable; any other mode is the ``autocast`` given."""
        self._precision_requested, self._auto_precision = mode, None
        if mode != "auto":
            self.precision = mode or ("no" if self.autocast is contextlib.nullcontext else "custom")
            return
        self.autocast, self.precision = contextlib.nullcontext, "no"
        measurable = self.execution == "sequential" and self._compile_requested in ("auto", "off") \
            and (self.planned_steps or 0) >= MIN_PLANNED_STEPS
        measure, reason = auto_precision_plan(self.phi.device, measurable)
        if measure:
            self._start_precision_trial()
        log.info("precision: %s", reason)

    def _start_precision_trial(self) -> None:
        agree = None
        if self.all_reduce is not None:  # every rank takes the mean of the ranks' speedups: all decide alike
            def agree(speedup: float) -> float:
                both = torch.tensor([speedup, 1.0], dtype=torch.float64, device=self.phi.device)
                self.all_reduce(both)
                return float(both[0] / both[1])
        self._auto_precision = AutoPrecision(lambda: graph_key(self.phi_module, self._input_shape or (), False),
                                             agree=agree)
        self.precision = "measuring"

    def _set_precision(self, precision: str) -> None:
        self.precision = precision
        self.autocast = autocast_factory(precision, self.phi.device) or contextlib.nullcontext

    @property
    def _measuring(self) -> bool:
        return self._auto_precision is not None or self._auto_channels_last is not None \
            or self._auto_compile is not None

    def _measured_step(self, meta_due: bool) -> tuple:
        """One global step, timed for whichever choice is being measured (the precision, then the memory format,
        then compiling)."""
        if self._auto_precision is not None:
            return self._precision_trial_step(meta_due)
        trial, compiled = self._auto_channels_last, self._auto_channels_last is None and self._auto_compile
        if trial is not None:
            self.channels_last = trial.use_channels_last()
        else:
            self._backbone_compiled = compiled.use_compiled()
        started = time.perf_counter()
        out = self._step_body(meta_due)
        seconds = time.perf_counter() - started
        if trial is not None:
            trial.done(seconds)
            if trial.decided:
                self.channels_last, self._auto_channels_last = trial.channels_last, None
        else:
            compiled.done(seconds)
            if compiled.phase in ("on", "off"):
                self.compile = "backbone" if compiled.phase == "on" else "off"
                self._backbone_compiled, self._auto_compile = self.compile == "backbone", None
        return out

    def _precision_trial_step(self, meta_due: bool) -> tuple:
        trial = self._auto_precision
        self.autocast = autocast_factory("bf16", self.phi.device) if trial.use_bf16() else contextlib.nullcontext
        started = time.perf_counter()
        out = self._step_body(meta_due)
        trial.done(time.perf_counter() - started)
        if trial.decided:
            self._set_precision("bf16" if trial.bf16 else "no")
            self._auto_precision = None
        return out

    def _task_backbone(self, t: int):
        """Task t's backbone as the loss function calls it: the module, or it through the compiled forward."""
        if not self._backbone_compiled:
            return self.backbones[t]
        if self._compiled_forward is None:
            self._compiled_forward = compile_forward()
        return CompiledBackbone(self.backbones[t], self._compiled_forward)

    # ------------------------------------------------------------------ checkpoint
    def _measured_state(self) -> dict:
        state = {}
        if self._precision_requested == "auto":
            state["precision"] = {"mode": self.precision} if self._auto_precision is None else \
                {"measuring": True, **self._auto_precision.state_dict()}
        if self._channels_last_requested == "auto":
            # (the key keeps its first name, "layout", so that checkpoints written before stay resumable as they ran)
            state["layout"] = {"channels_last": self.channels_last} if self._auto_channels_last is None else \
                {"measuring": True, **self._auto_channels_last.state_dict()}
        if self._compile_requested == "auto":
            state["compile"] = {"mode": self.compile} if self._auto_compile is None else \
                {"mode": "measuring", **self._auto_compile.state_dict()}
        return state

    def _load_measured_state(self, state: dict) -> None:
        if self._precision_requested == "auto":
            # the checkpoint's precision, whatever this machine has: a resumed run keeps the precision it started
            # with (a checkpoint from before 'auto' existed ran fp32)
            precision = state.get("precision", {"mode": "no"})
            if precision.get("measuring"):
                if self._auto_precision is None:
                    self._start_precision_trial()
                self._auto_precision.load_state_dict(precision)
            else:
                self._set_precision(precision["mode"])
                self._auto_precision = None
        if self._channels_last_requested == "auto":
            # a checkpoint without the key (made before channels_last 'auto' existed) ran contiguous: continue so
            trial = state.get("layout", {"channels_last": False})
            if trial.get("measuring") and self._auto_channels_last is not None:
                self._auto_channels_last.load_state_dict(trial)
            elif not trial.get("measuring"):
                # the memory format is a per-step choice of sequential execution only (batched fixes it at construction)
                self.channels_last = bool(trial["channels_last"]) and self.execution == "sequential"
                self._auto_channels_last = None
        compile_state = state.get("compile") if self._compile_requested == "auto" else None
        if compile_state and compile_state["mode"] != "measuring":
            self.compile, self._auto_compile = compile_state["mode"], None
            self._backbone_compiled = self.compile == "backbone"
        elif compile_state and self._auto_compile is not None:
            self._auto_compile.load_state_dict(compile_state)
