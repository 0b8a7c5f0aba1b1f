"""The engine's measured execution choices: ``channels_last: auto`` (``execution/channels_last.py``) and
``compile: auto`` (``execution/compiled.py``), made from the run's own first steps on the CPU. The memory format is
chosen first (its trial steps run eager: it is measured only where ``compile`` is auto or off), then the compile
decision is measured in the chosen memory format, so the compiled graph sees one memory format only.
While either is measuring, every step is timed; each choice is kept in the checkpoint, so a resumed run runs its
steps as the first run would have."""
from __future__ import annotations

import contextlib
import logging
import time

from ..execution.channels_last import MIN_PLANNED_STEPS, AutoChannelsLast
from ..execution.choices import choose_compile, measures_compile, uncached_autocast
from ..execution.compiled import AutoCompile, CompiledBackbone, compile_forward, graph_key

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
            autocast = self.autocast is not contextlib.nullcontext
            # the memory format is part of what was measured (it is decided first, see the module docstring)
            self._auto_compile = AutoCompile(lambda: max(self.planned_steps - self.step_count, 0),
                                             lambda: graph_key(self.phi_module, self._input_shape or (), autocast)
                                             + (":channels_last" if self.channels_last else ""))
        self._backbone_compiled = chosen == "backbone"
        if chosen == "graphs":
            self.autocast = uncached_autocast(self.autocast)
        if chosen != "off":
            log.info("compile: %s", chosen)
        return chosen

    @property
    def _measuring(self) -> bool:
        return self._auto_channels_last is not None or self._auto_compile is not None

    def _measured_step(self, meta_due: bool) -> tuple:
        """One global step, timed for whichever choice is being measured (the memory format first)."""
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
        if self._channels_last_requested == "auto":
            # (the key keeps its first name, "layout", so that checkpoints written before stay resumable as they ran)
            state["layout"] = {"channels_last": self.channels_last} if self._auto_channels_last is None else \
                {"measuring": True, **self._auto_channels_last.state_dict()}
        if self._compile_requested == "auto":
            state["compile"] = {"mode": self.compile} if self._auto_compile is None else \
                {"mode": "measuring", **self._auto_compile.state_dict()}
        return state

    def _load_measured_state(self, state: dict) -> None:
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
