"""Batched execution: the inner forward/backward of T same-shape tasks as one program on stacked parameters.

The backbone's own ``forward`` runs once on the T tasks' batches laid side by side along the channel axis
(``[B, T*C, H, W]``, task t owning channels ``t*C .. (t+1)*C - 1``):

- every ``Conv2d`` becomes a grouped convolution (``groups = T x`` its own groups) over the T tasks' stacked
  weights, so output channel block t only sees input channel block t and task t's weights;
- every ``BatchNorm2d`` becomes one batch norm over ``T*C`` channels: batch statistics and running statistics are
  per channel, hence per task (each task module's running-statistics buffers are bound as views into the stacked
  buffers, so the task modules, their ``state_dict`` and checkpoints see them as before);
- every other layer allowed here (ReLU, pooling, flatten, identity) and the glue in the backbones' forward code
  (residual additions, spatial means) is channel-wise, so it keeps the tasks apart too. Anything else is refused up
  front, and the first batched step compares the grouped forward with every task's own forward on the same data
  (a probe), so a backbone whose forward code mixes channels is caught before it trains;
- heads of different widths are stacked, padded to the widest, and the padded logits masked to ``-inf`` (they get
  zero probability and zero gradient).

The loss is the sum over tasks of each task's mean cross-entropy; tasks share no parameter, so each task's
gradient is exactly its own loss's gradient, as in the sequential engine. The result is the same training up to
floating-point rounding (grouped and plain kernels sum in different orders): tests/test_batched.py compares both.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Parameter- and buffer-free layers that act on each channel separately: they keep the tasks apart as they are.
CHANNELWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Identity,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
)


class _GroupedConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d, num_tasks: int, store: dict, weight_key: str, bias_key: str | None):
        super().__init__()
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups = conv.groups * num_tasks
        self.store, self.weight_key, self.bias_key = store, weight_key, bias_key

    def forward(self, x):
        bias = self.store[self.bias_key] if self.bias_key is not None else None
        return F.conv2d(x, self.store[self.weight_key], bias, self.stride, self.padding, self.dilation, self.groups)


class _GroupedBatchNorm2d(nn.Module):
    """Batch norm over T*C channels; running statistics in ``[T, C]`` buffers that the task modules view."""

    def __init__(self, bn: nn.BatchNorm2d, store: dict, weight_key: str | None, bias_key: str | None,
                 running_mean: torch.Tensor | None, running_var: torch.Tensor | None, tracked: torch.Tensor | None):
        super().__init__()
        self.eps, self.momentum = bn.eps, bn.momentum
        self.store, self.weight_key, self.bias_key = store, weight_key, bias_key
        self.stacked_mean, self.stacked_var, self.tracked = running_mean, running_var, tracked

    def forward(self, x):
        weight = self.store[self.weight_key] if self.weight_key is not None else None
        bias = self.store[self.bias_key] if self.bias_key is not None else None
        if self.tracked is not None:
            self.tracked.add_(1)
        mean = self.stacked_mean.view(-1) if self.stacked_mean is not None else None
        var = self.stacked_var.view(-1) if self.stacked_var is not None else None
        return F.batch_norm(x, mean, var, weight, bias, True, self.momentum, self.eps)


def unsupported_reason(backbone: nn.Module, heads: Sequence[nn.Module]) -> str | None:
    """Why these modules cannot run batched (None when they can, subject to the first-step probe)."""
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                return f"{name}: Conv2d padding_mode '{module.padding_mode}'"
        elif isinstance(module, nn.BatchNorm2d):
            if module.track_running_stats and module.momentum is None:
                return f"{name}: BatchNorm2d with momentum=None (cumulative averaging)"
        elif isinstance(module, CHANNELWISE):
            continue
        elif any(True for _ in module.children()):
            if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
                return f"{name or 'the backbone'} ({type(module).__name__}) holds parameters or buffers of its own"
        else:
            return f"{name} ({type(module).__name__}) is not a layer batched execution knows to keep tasks apart"
    for t, head in enumerate(heads):
        if type(head).forward is not nn.Linear.forward or head.bias is None:
            return f"head {t} ({type(head).__name__}) is not a plain linear layer with bias"
    if len({h.in_features for h in heads}) != 1:
        return "heads take features of different sizes"
    return None


class BatchedTasks:
    """Runs the forward/backward of every local task of a ``TrajectoryEngine`` as one program.

    ``template`` is the backbone the task modules were copied from; ``backbones``/``heads`` the task modules;
    ``meta_slices`` maps each meta-learned parameter name to its ``(offset, numel)`` in a row of ``thetas``.
    """

    def __init__(self, template: nn.Module, backbones: Sequence[nn.Module], heads: Sequence[nn.Module],
                 thetas: torch.Tensor, grads: torch.Tensor, meta_slices: dict[str, tuple[int, int]],
                 channels_last: bool = False):
        self.num_tasks = len(backbones)
        self.channels_last = channels_last
        self.backbones, self.heads = list(backbones), list(heads)
        self.thetas, self.grads = thetas, grads
        self.meta_slices = meta_slices
        self.param_shapes = {n: p.shape for n, p in template.named_parameters()}
        self.private_names = [n for n in self.param_shapes if n not in meta_slices]
        self.task_params = [dict(b.named_parameters()) for b in self.backbones]
        self.store: dict[str, torch.Tensor] = {}
        self.shell = copy.deepcopy(template).train()
        self.stacked_buffers: list[torch.Tensor] = []
        for name, module in list(self.shell.named_modules()):
            if isinstance(module, nn.Conv2d):
                new = _GroupedConv2d(module, self.num_tasks, self.store, f"{name}.weight",
                                     f"{name}.bias" if module.bias is not None else None)
            elif isinstance(module, nn.BatchNorm2d):
                new = _GroupedBatchNorm2d(module, self.store, f"{name}.weight" if module.weight is not None else None,
                                          f"{name}.bias" if module.bias is not None else None,
                                          *self._bind_buffers(name, module))
            else:
                continue
            parent, _, child = name.rpartition(".")
            self.shell.get_submodule(parent)._modules[child] = new
        widths = [h.out_features for h in self.heads]
        self.widths, self.max_width = widths, max(widths)
        device = thetas.device
        self.padded = torch.tensor([[c >= w for c in range(self.max_width)] for w in widths], device=device)
        self.any_padding = bool(self.padded.any())

    def _bind_buffers(self, name: str, module: nn.BatchNorm2d):
        """Stack every task's running statistics of this layer into one buffer and make theirs views into it."""
        if not module.track_running_stats:
            return None, None, None
        stacked = []
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            task_modules = [b.get_submodule(name) for b in self.backbones]
            buffer = torch.stack([m._buffers[key] for m in task_modules])
            for t, m in enumerate(task_modules):
                m._buffers[key] = buffer[t]
            stacked.append(buffer)
            self.stacked_buffers.append(buffer)
        return tuple(stacked)

    def rebind_buffer(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Use ``new`` (same shape and values) wherever the stacked buffer ``old`` was used: the engine moves the
        stacked buffers into its flat per-dtype buffers (one snapshot and one masked restore per dtype)."""
        self.stacked_buffers = [new if b is old else b for b in self.stacked_buffers]
        for module in self.shell.modules():
            if isinstance(module, _GroupedBatchNorm2d):
                for attr in ("stacked_mean", "stacked_var", "tracked"):
                    if getattr(module, attr) is old:
                        setattr(module, attr, new)

    # ------------------------------------------------------------------ support checks
    @staticmethod
    def same_shapes(batches) -> bool:
        first = batches[0]
        if not (isinstance(first, (tuple, list)) and len(first) == 2 and torch.is_tensor(first[0]) and first[0].dim() == 4):
            return False
        return all(isinstance(b, (tuple, list)) and len(b) == 2 and b[0].shape == first[0].shape
                   and b[1].shape == first[1].shape and b[0].dtype == first[0].dtype for b in batches)

    def ready(self, batches) -> bool:
        """Whether this step can run batched: equal batch shapes, every task module in training mode."""
        return (self.same_shapes(batches) and all(m.training for b in self.backbones for m in b.modules())
                and all(h.training for h in self.heads))

    def check(self, batches, samples: int = 8) -> str | None:
        """The probe, on the first samples of ``batches`` (training mode, no gradient, running statistics restored
        afterwards). None if the grouped forward keeps the tasks apart, else why not. Two tests:

        - independence: changing task 0's input must leave every other task's features unchanged (up to 1e-4 of
          their scale). A forward that mixes channels moves them by about their own size; one that does not leaves
          them bitwise equal in practice (every kernel here keeps groups and channels apart).
        - agreement: the grouped forward against every task's own forward, within 5% of the features' scale. This
          is loose on purpose: it catches wiring errors (which give differences of the scale itself), while fp32
          rounding through deep networks differs between grouped and plain kernels by up to ~1e-3 on a GPU (cuDNN's
          algorithm choice, batch norm over a few samples), which an earlier tolerance of 1e-3 refused for ResNet-20.
        """
        saved = [b.clone() for b in self.stacked_buffers]
        try:
            with torch.no_grad():
                xs = [x[:samples] for x, _ in batches]
                expected = torch.stack([self.backbones[t](xs[t]) for t in range(self.num_tasks)])
                self._load_weights(requires_grad=False)
                got = self._features(xs)
                other = list(xs)
                other[0] = torch.flip(xs[0], dims=(0, 2, 3)) * 2 + 1
                moved = self._features(other)
        except Exception as e:  # noqa: BLE001 - any failure means "not batchable"
            return f"the grouped forward failed ({type(e).__name__}: {e})"
        finally:
            for b, s in zip(self.stacked_buffers, saved):
                b.copy_(s)
            self.store.clear()
        if got.shape != expected.shape:
            return f"the grouped forward gives features of shape {tuple(got.shape)}, the tasks' {tuple(expected.shape)}"
        scale = float(expected.abs().max()) + 1e-6
        leak = float((moved[1:] - got[1:]).abs().max()) if self.num_tasks > 1 else 0.0
        if not leak <= 1e-4 * scale:
            return (f"changing one task's input moves the other tasks' features by {leak:.3g} (scale {scale:.3g}): "
                    "its forward mixes channels")
        error = float((got - expected).abs().max())
        if not error <= 5e-2 * scale:
            return f"the grouped forward differs from the tasks' own by {error:.3g} (scale {scale:.3g}): its forward mixes channels"
        return None

    # ------------------------------------------------------------------ the step
    def _load_weights(self, requires_grad: bool) -> list[torch.Tensor]:
        """Stacked ``[T*dim0, ...]`` copies of every backbone parameter into ``store``; returns them in order."""
        T = self.num_tasks
        leaves = []
        for name, shape in self.param_shapes.items():
            if name in self.meta_slices:
                offset, numel = self.meta_slices[name]
                value = self.thetas[:, offset:offset + numel]
            else:
                value = torch.stack([params[name].detach() for params in self.task_params])
            value = value.reshape(T * shape[0], *shape[1:]) if len(shape) else value.reshape(T)
            if requires_grad:
                value = value.detach().requires_grad_()
            leaves.append(value)
            if self.channels_last and value.dim() == 4:  # a differentiable copy; the leaf keeps the flat layout
                value = value.contiguous(memory_format=torch.channels_last)
            self.store[name] = value
        return leaves

    def _features(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        T = self.num_tasks
        b, c, h, w = xs[0].shape
        x = torch.stack(list(xs), 1).view(b, T * c, h, w)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.shell(x)
        return features.reshape(b, T, -1).transpose(0, 1)  # [T, B, F]

    def forward_backward(self, batches, autocast) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of every task's loss into ``grads`` (rows) and the private parameters' ``.grad``.
        Returns the per-task losses and accuracies (detached). ``grads`` must be zero on entry."""
        T = self.num_tasks
        xs = [x for x, _ in batches]
        y = torch.stack([y for _, y in batches])  # [T, B]
        backbone_leaves = self._load_weights(requires_grad=True)
        weight = torch.zeros(T, self.max_width, self.heads[0].in_features, device=self.thetas.device,
                             dtype=self.heads[0].weight.dtype)
        bias = torch.zeros(T, self.max_width, device=self.thetas.device, dtype=self.heads[0].bias.dtype)
        for t, head in enumerate(self.heads):
            weight[t, :self.widths[t]] = head.weight.detach()
            bias[t, :self.widths[t]] = head.bias.detach()
        weight.requires_grad_()
        bias.requires_grad_()
        try:
            with autocast():
                features = self._features(xs)
                logits = torch.baddbmm(bias.unsqueeze(1).to(features.dtype), features,
                                       weight.transpose(1, 2).to(features.dtype))
                if self.any_padding:
                    logits = logits.masked_fill(self.padded[:, None, :], float("-inf"))
                losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(T, -1).mean(1)
            grads = torch.autograd.grad(losses.sum(), backbone_leaves + [weight, bias], allow_unused=True)
        finally:
            self.store.clear()
        for name, g in zip(self.param_shapes, grads):
            if g is None:
                continue
            if name in self.meta_slices:
                offset, numel = self.meta_slices[name]
                self.grads[:, offset:offset + numel].copy_(g.reshape(T, numel))
            else:
                g = g.reshape(T, *self.param_shapes[name])
                for t, params in enumerate(self.task_params):
                    params[name].grad = g[t]
        g_weight, g_bias = grads[-2], grads[-1]
        for t, head in enumerate(self.heads):
            head.weight.grad = g_weight[t, :self.widths[t]]
            head.bias.grad = g_bias[t, :self.widths[t]]
        accuracies = (logits.detach().argmax(-1) == y).float().mean(1)
        return losses.detach().float(), accuracies

    # ------------------------------------------------------------------ task pools
    def set_head(self, t: int, head: nn.Module) -> None:
        """Slot t now trains another task (``TrajectoryEngine.set_task``): its head may have another width."""
        from ..errors import ConfigError

        if type(head).forward is not nn.Linear.forward or head.bias is None:
            raise ConfigError(f"batched execution needs plain linear heads with bias; got {type(head).__name__}")
        if head.in_features != self.heads[0].in_features:
            raise ConfigError(f"a head on {head.in_features} features in batched execution over {self.heads[0].in_features}")
        self.heads[t] = head
        self.widths[t] = head.out_features
        self.max_width = max(self.widths)
        self.padded = torch.tensor([[c >= w for c in range(self.max_width)] for w in self.widths], device=self.thetas.device)
        self.any_padding = bool(self.padded.any())
