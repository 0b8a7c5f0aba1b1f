"""The flat layout of the meta-learned parameters, and inner optimizer states between its two formats.

Every task's meta-learned tensors are views into one row of a ``[T, P]`` buffer (``FlatLayout``), and each task's
inner optimizer sees that row as one flat parameter. Checkpoints and task pools keep the optimizer state in the
per-tensor format (one entry per meta-learned tensor, then the private parameters), as if every tensor had its own
optimizer entry: :func:`per_tensor_state` and :func:`flat_state` convert between the two.

Memory layout: the meta-learned parameters of every task's backbone are views into one ``[T, P]`` fp32 buffer
(``thetas``), their gradients views into another (``grads``), and phi is a ``[P]`` fp32 parameter. Meta-updates,
shifts and resets are therefore a few vector operations, whatever the number of parameter tensors. Heads,
parameters excluded from meta-learning and BN buffers are ordinary per-task tensors that no meta operation
touches. Each task's inner optimizer sees its row of ``thetas`` as one flat parameter (plus its private
parameters), so an inner step is a few vector operations too; its ``state_dict`` keeps the per-tensor format.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError


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


def per_tensor_state(state: dict, layout: FlatLayout) -> dict:
    """An optimizer ``state_dict`` over (flat parameter, private parameters...) in the per-tensor format: one entry
    per meta-learned tensor, in layout order, then the private parameters. Copies (optimizers update in place)."""
    m = len(layout.names)
    groups = copy.deepcopy(state["param_groups"])
    remap = lambda i: list(range(m)) if i == 0 else [m + i - 1]  # noqa: E731
    for group in groups:
        group["params"] = [j for i in group["params"] for j in remap(i)]
    out = {}
    for i, s in state["state"].items():
        if i != 0:
            out[m + i - 1] = copy.deepcopy(s)
            continue
        for j, (o, n, shape) in enumerate(zip(layout.offsets, layout.numels, layout.shapes)):
            out[j] = {k: (v[o:o + n].view(shape).clone() if torch.is_tensor(v) and v.dim() == 1 and v.numel() == layout.size
                          else copy.deepcopy(v)) for k, v in s.items()}
    return {"state": dict(sorted(out.items())), "param_groups": groups}


def flat_state(state: dict, layout: FlatLayout, num_private: int, task: int) -> dict:
    """The inverse of :func:`per_tensor_state` for task ``task`` with ``num_private`` private parameters: the
    meta-learned tensors' entries joined into the flat parameter's entry. A state already flat passes through."""
    m, k = len(layout.names), num_private
    saved_ids = [i for g in state["param_groups"] for i in g["params"]]
    if len(saved_ids) != m + k:
        if len(saved_ids) == 1 + k:
            return state
        raise ConfigError(f"task {task}'s inner optimizer state holds {len(saved_ids)} parameters, expected {m + k}")
    entries = [state["state"].get(i) for i in saved_ids[:m]]
    out = {}
    if any(e is not None for e in entries):
        if any(e is None for e in entries):
            raise ConfigError(f"task {task}'s inner optimizer state covers only some meta-learned parameters")
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
