"""The parts of a global step that keep it on the device: masked (skipped) task updates and graph capture.

A task whose inner loss (or gradient) is not finite skips its step. Deciding that on the host would read the losses
back every step, a synchronization that stalls a GPU whose step is bound by kernel launches. Instead the skip is a
bool mask on the device, and every effect of the step on a skipped task is undone by device operations:

- its gradient row is zeroed (``masked_fill_``), so gradient-based meta directions leave it out, as before;
- its BN running statistics, which the forward already updated, are restored from a per-step snapshot
  (``TaskBuffers``: every task's buffers live in one flat tensor per dtype, so the snapshot is one copy and the
  restore one ``torch.where`` per dtype, whatever the number of layers and tasks);
- its inner optimizer step is undone (``masked_optimizer_step``): parameters and optimizer state are snapshotted
  before the step and restored with ``torch.where`` after it; state that the step created (the first step after
  a reset) is zeroed, which is exactly a fresh state for SGD (a zero momentum buffer) and Adam (zero moments, step 0).

``torch.where`` selects values, so a task that is not skipped gets bitwise the update it gets without the mask, and a
skipped task bitwise keeps what it had, NaN or not. No step reads a device value on the host, which also makes the
whole step capturable as one CUDA graph (``CapturedStep``).
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)


class TaskBuffers:
    """Every task's buffers (BN running statistics and counters) as views into one flat tensor per dtype.

    ``task_modules[t]`` are task t's modules (backbone, head). When every task has the same buffers (the usual
    case: copies of one backbone), buffer i of all tasks is one contiguous ``[T, *shape]`` block, so batched
    execution can use the block as its stacked buffer (``rebind(old_stacked, new_block)`` is called for each stacked
    buffer it had). Values, module attributes and ``state_dict`` are unchanged: only the storage moves.
    """

    def __init__(self, task_modules: Sequence[Sequence[nn.Module]], device: torch.device,
                 rebind: Callable[[torch.Tensor, torch.Tensor], None] | None = None):
        entries = [[(m, k) for root in roots for m in root.modules() for k, b in m._buffers.items() if b is not None]
                   for roots in task_modules]
        num_tasks = len(entries)

        def spec(entry):
            module, key = entry
            b = module._buffers[key]
            return tuple(b.shape), b.dtype

        aligned = len({len(e) for e in entries}) == 1 and all(len({spec(e) for e in column}) == 1
                                                             for column in zip(*entries))
        if aligned:  # buffer i of every task, side by side
            blocks = [[(t, entry) for t, entry in enumerate(column)] for column in zip(*entries)]
        else:
            blocks = [[(t, entry)] for t, task in enumerate(entries) for entry in task]
        sizes: dict[torch.dtype, int] = {}
        for block in blocks:
            shape, dtype = spec(block[0][1])
            sizes[dtype] = sizes.get(dtype, 0) + len(block) * int(torch.Size(shape).numel())
        self.flat = {dtype: torch.empty(n, dtype=dtype, device=device) for dtype, n in sizes.items()}
        self.snapshot_flat = {dtype: torch.empty_like(f) for dtype, f in self.flat.items()}
        task_index = {dtype: torch.empty(n, dtype=torch.long) for dtype, n in sizes.items()}
        offsets = dict.fromkeys(sizes, 0)
        with torch.no_grad():
            for block in blocks:
                shape, dtype = spec(block[0][1])
                n = int(torch.Size(shape).numel())
                start = offsets[dtype]
                olds = [m._buffers[k] for _, (m, k) in block]
                for i, (t, (module, key)) in enumerate(block):
                    view = self.flat[dtype][start + i * n:start + (i + 1) * n].view(shape)
                    view.copy_(module._buffers[key])
                    module._buffers[key] = view
                    task_index[dtype][start + i * n:start + (i + 1) * n] = t
                base = olds[0]._base
                if rebind is not None and aligned and base is not None and all(o._base is base for o in olds) \
                        and base.shape[0] == num_tasks:
                    rebind(base, self.flat[dtype][start:start + len(block) * n].view(len(block), *shape))
                offsets[dtype] = start + len(block) * n
        self.task_index = {dtype: idx.to(device) for dtype, idx in task_index.items()}

    def snapshot(self) -> None:
        """Copy every buffer aside (before a training-mode forward): one copy per dtype."""
        for dtype, flat in self.flat.items():
            self.snapshot_flat[dtype].copy_(flat)

    @torch.no_grad()
    def restore(self, keep: torch.Tensor) -> None:
        """Tasks where ``keep`` (bool ``[T]``, on the device) is False get their buffers of the last snapshot back."""
        for dtype, flat in self.flat.items():
            torch.where(keep[self.task_index[dtype]], flat, self.snapshot_flat[dtype], out=flat)


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for group in optimizer.param_groups for p in group["params"]
            for v in optimizer.state.get(p, {}).values() if torch.is_tensor(v)]


@torch.no_grad()
def masked_optimizer_step(optimizers: Sequence[torch.optim.Optimizer], keep: torch.Tensor, rows: torch.Tensor,
                          rows_snapshot: torch.Tensor, private: Sequence[Sequence[torch.Tensor]]) -> None:
    """``optimizers[t].step()`` for every task, undone on the device for tasks where ``keep[t]`` is False.

    ``rows`` is the ``[T, P]`` buffer of the tasks' flat parameters (restored with one ``where``; its snapshot goes
    into ``rows_snapshot``), ``private[t]`` task t's other parameters. Optimizer state tensors are restored too;
    state created by this step is zeroed for skipped tasks (a fresh state, see the module docstring).
    """
    before = [list(private[t]) + _state_tensors(opt) for t, opt in enumerate(optimizers)]
    flat_before = [x for xs in before for x in xs]
    saved = torch._foreach_mul(flat_before, 1.0) if flat_before else []  # exact copies, one fused kernel
    rows_snapshot.copy_(rows)
    for opt in optimizers:
        opt.step()
    torch.where(keep[:, None], rows, rows_snapshot, out=rows)
    i = 0
    for t, opt in enumerate(optimizers):
        ok = keep[t]
        known = set()
        for x in before[t]:
            torch.where(ok, x, saved[i], out=x)
            known.add(id(x))
            i += 1
        for x in _state_tensors(opt):
            if id(x) not in known:  # created by this step: a skipped task keeps a fresh (zero) state
                x.masked_fill_(~ok, 0)


class CapturedStep:
    """Runs an engine's global step as a replayed CUDA graph (``compile: graphs``).

    ``body(meta_due)`` is the engine's device work of one global step (batches drawn on the device, forward/backward,
    non-finite mask, inner steps, meta-update and shift when ``meta_due``); it returns the step's output tensors.
    Per kind of step (with or without a meta-update) the body first runs eagerly ``warmup`` times on a side stream
    (torch's recipe: optimizer state and cuDNN's algorithm choice are created lazily there), then it is captured
    once and replayed from then on. Host-side work stays outside the graph: ``prepare()`` of every batch source
    before (a new epoch's order, rarely), ``advance()`` after, and the trajectory reset (a cheap eager copy).
    ``invalidate()`` drops the graphs (after anything replaced the tensors they read: a checkpoint load, a hard
    reset that cleared optimizer state).

    The graph's outputs are static tensors that the next replay overwrites: the step returns clones.
    The body draws no random numbers from torch's generators (augmentation uses a counter-based hash, see
    ``DeviceBatchSampler``); torch would handle them anyway (the default CUDA generator is registered with every
    captured graph, whose replays advance its Philox offset).
    """

    def __init__(self, body: Callable[[bool], tuple], sources: Sequence, device: torch.device, warmup: int = 2):
        self.body, self.sources, self.device, self.warmup = body, list(sources), device, warmup
        self.graphs: dict[bool, object] = {}
        self.outputs: dict[bool, tuple] = {}
        self.runs: dict[bool, int] = {}
        self.pool = None
        self.stream = None

    def invalidate(self) -> None:
        self.graphs.clear()
        self.outputs.clear()
        self.runs.clear()

    # Hooks (a CPU test substitutes them to check the control flow; the real ones need CUDA).
    def _new_graph(self):
        return torch.cuda.CUDAGraph()

    def _capture(self, graph, meta_due: bool) -> tuple:
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool):
            return self.body(meta_due)

    def _warm(self, meta_due: bool) -> tuple:
        if self.device.type != "cuda":
            return self.body(meta_due)
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            out = self.body(meta_due)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return out

    def __call__(self, meta_due: bool) -> tuple:
        for source in self.sources:
            source.prepare()
        if meta_due not in self.graphs and self.runs.get(meta_due, 0) < self.warmup:
            self.runs[meta_due] = self.runs.get(meta_due, 0) + 1
            out = self._warm(meta_due)
        else:
            if meta_due not in self.graphs:
                graph = self._new_graph()
                self.outputs[meta_due] = self._capture(graph, meta_due)
                self.graphs[meta_due] = graph
                log.info("compile: captured the global step%s as a CUDA graph", " with a meta-update" if meta_due else "")
            self.graphs[meta_due].replay()
            out = tuple(o.clone() if torch.is_tensor(o) else o for o in self.outputs[meta_due])
        for source in self.sources:
            source.advance()
        return out
