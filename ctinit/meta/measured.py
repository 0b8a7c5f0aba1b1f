"""The engine's measured execution choices: ``channels_last: auto`` (``execution/autolayout.py``) and
``compile: auto`` (``execution/compiled.py``), made from the run's own first steps on the CPU. The layout is chosen
first (its trial steps run eager: it is measured only where ``compile`` is auto or off), then the compile decision
is measured in the chosen layout, so the compiled graph sees one layout only.
While either is measuring, every step is timed; each choice is kept in the checkpoint, so a resumed run runs its
steps as the first run would have."""
from __future__ import annotations

import contextlib
import logging
import time

from ..execution.autolayout import MIN_PLANNED_STEPS, AutoLayout
from ..execution.choices import choose_compile, measures_compile, uncached_autocast
from ..execution.compiled import AutoCompile, CompiledBackbone, compile_forward, graph_key

log = logging.getLogger("ctinit.meta.engine")

#: ``channels_last`` values: a bool, or ``auto`` (measured on the CPU with sequential execution, else off).
LAYOUT_MODES = (True, False, "auto")


class MeasuredExecution:
    """Mixed into ``TrajectoryEngine``: sets ``channels_last``, ``compile`` and ``_backbone_compiled``."""

    def _choose_layout(self, mode) -> bool:
        """The layout to start with; ``auto`` on the CPU with sequential execution, ``compile`` auto or off and a run
        of at least MIN_PLANNED_STEPS starts an ``AutoLayout`` (elsewhere ``auto`` is contiguous)."""
        if mode not in LAYOUT_MODES:
            from ..errors import ConfigError
            raise ConfigError(f"channels_last must be true, false or auto, got {mode!r}")
        self._layout_requested = mode
        self._auto_layout = None
        # only where the trial's steps run eager (a compiled graph would be traced again for the other layout)
        if mode == "auto" and self.phi.device.type == "cpu" and self.execution == "sequential" \
                and self._compile_requested in ("auto", "off") and (self.planned_steps or 0) >= MIN_PLANNED_STEPS:
            self._auto_layout = AutoLayout(lambda: graph_key(self.phi_module, self._input_shape or (),
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
            # the layout is part of what was measured (it is decided first, see the module docstring)
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
        return self._auto_layout is not None or self._auto_compile is not None

    def _measured_step(self, meta_due: bool) -> tuple:
        """One global step, timed for whichever choice is being measured (the layout first)."""
        layout, compiled = self._auto_layout, self._auto_layout is None and self._auto_compile
        if layout is not None:
            self.channels_last = layout.use_channels_last()
        else:
            self._backbone_compiled = compiled.use_compiled()
        started = time.perf_counter()
        out = self._step_body(meta_due)
        seconds = time.perf_counter() - started
        if layout is not None:
            layout.done(seconds)
            if layout.decided:
                self.channels_last, self._auto_layout = layout.channels_last, None
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
        if self._layout_requested == "auto":
            state["layout"] = {"channels_last": self.channels_last} if self._auto_layout is None else \
                {"measuring": True, **self._auto_layout.state_dict()}
        if self._compile_requested == "auto":
            state["compile"] = {"mode": self.compile} if self._auto_compile is None else \
                {"mode": "measuring", **self._auto_compile.state_dict()}
        return state

    def _load_measured_state(self, state: dict) -> None:
        if self._layout_requested == "auto":
            # a checkpoint without the key (made before channels_last 'auto' existed) ran contiguous: continue so
            layout = state.get("layout", {"channels_last": False})
            if layout.get("measuring") and self._auto_layout is not None:
                self._auto_layout.load_state_dict(layout)
            elif not layout.get("measuring"):
                # the layout is a per-step choice of sequential execution only (batched fixes it at construction)
                self.channels_last = bool(layout["channels_last"]) and self.execution == "sequential"
                self._auto_layout = None
        compile_state = state.get("compile") if self._compile_requested == "auto" else None
        if compile_state and compile_state["mode"] != "measuring":
            self.compile, self._auto_compile = compile_state["mode"], None
            self._backbone_compiled = self.compile == "backbone"
        elif compile_state and self._auto_compile is not None:
            self._auto_compile.load_state_dict(compile_state)
