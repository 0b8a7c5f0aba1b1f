"""Meta-rules of the trajectory engine, and the vector operations that apply them.

Notation (Shin, Lee, Gong, Hwang, "Large-Scale Meta-Learning with Continual Trajectory Shifting",
ICML 2021, arXiv:2102.07215): ``phi`` is the shared initialization (meta-learned backbone parameters), task t
has its own trajectory ``theta_t`` that starts at ``phi`` and takes inner optimizer steps, and every
``meta_interval`` steps the meta-optimizer moves ``phi`` along a direction ``g`` computed from the trajectories.
Every ``reset_period`` (K) steps the trajectories restart from ``phi``.

All parameters of one kind live in flat fp32 buffers: ``phi`` is ``[P]`` and ``thetas`` is ``[T, P]`` (one row a
task), so each rule is a handful of vector operations whatever the number of parameter tensors.

The rules as settings of one engine:

=============  =====================================================  =============  =====
rule           direction g (averaged over all tasks t)                meta_interval  shift
=============  =====================================================  =============  =====
cts            phi - theta_t                                          1              yes
reptile        phi - theta_t                                          K              no
fomaml-cts     grad L_t(theta_t)                                      1              yes
fomaml         grad L_t(theta_t) on a held-out batch, after each      1              no
               inner step (the official code's FOMAML)
fomaml-k       grad L_t(theta_t^K) on a held-out batch                K              no
leap           sum_i -(dtheta_i + dL_i grad L_t(theta_i)) / d_i       K              no
mtl            grad L_t(phi)  (theta_t == phi: K = 1)                 1              no
scratch        none: tasks train independently, phi stays at init     never          no
=============  =====================================================  =============  =====
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class MetaRule:
    """How one algorithm uses the engine.

    ``direction`` names how g is computed (``trajectory``, ``gradient``, ``heldout_gradient``, ``path_length``
    or ``none``); ``meta_interval`` None means "equal to the reset period K"; ``reset_period`` None means "from
    the config" (MTL forces 1: its trajectories never leave phi).
    """

    name: str
    direction: str
    shift: bool
    meta_interval: int | None
    reset_period: int | None = None
    summary: str = ""


RULES: dict[str, MetaRule] = {
    "cts": MetaRule("cts", "trajectory", True, 1, None,
                    "phi <- phi - beta mean_t(phi - theta_t) every step; theta_t += delta phi; reset every K"),
    "reptile": MetaRule("reptile", "trajectory", False, None, None,
                        "phi <- phi - beta mean_t(phi - theta_t^K) every K steps, then reset"),
    "fomaml-cts": MetaRule("fomaml-cts", "gradient", True, 1, None,
                           "phi <- phi - beta mean_t grad L_t(theta_t) every step; theta_t += delta phi"),
    # The official code's FOMAML (meta_train_fomaml.py, aggregate_period 1): after every inner step, phi moves
    # along the held-out-batch gradient at the tasks' current thetas; the thetas are not shifted.
    "fomaml": MetaRule("fomaml", "heldout_gradient", False, 1, None,
                       "phi <- phi - beta mean_t grad L_t(theta_t; held-out batch) after every inner step"),
    # The once-per-trajectory variant (this repository's FOMAML before issue 20): one held-out gradient at the end
    # of each K-step trajectory, as in few-shot first-order MAML.
    "fomaml-k": MetaRule("fomaml-k", "heldout_gradient", False, None, None,
                         "phi <- phi - beta mean_t grad L_t(theta_t^K; held-out batch) every K steps"),
    "leap": MetaRule("leap", "path_length", False, None, None,
                     "phi <- phi - beta mean_t grad_phi(length of the loss-augmented path of theta_t)"),
    "mtl": MetaRule("mtl", "gradient", False, 1, 1,
                    "joint training: phi <- phi - beta mean_t grad L_t(phi), task heads separate"),
    "scratch": MetaRule("scratch", "none", False, None, None,
                        "no meta-learning: every task trains on its own from the initialization"),
}


def get_rule(name: str) -> MetaRule:
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm '{name}': choose one of {', '.join(RULES)}") from None


def schedule(rule: str | MetaRule, reset_period: int, meta_interval: int | None = None) -> tuple[int, int]:
    """``(K, meta_interval)`` of a run of ``rule``: the rule's own where it fixes one (MTL resets every step, CTS
    meta-updates every step), else the given ones; ``meta_interval`` None is the rule's, else K. The one place both
    are resolved and checked: the trainer's config, the task pool and the engine all take them from here."""
    rule = rule if isinstance(rule, MetaRule) else get_rule(rule)
    period = int(rule.reset_period or reset_period)
    interval = int(meta_interval or rule.meta_interval or period)
    if period < 1 or interval < 1:
        raise ConfigError(f"reset_period and meta_interval must be >= 1, got {period} and {interval}")
    if interval > period:
        raise ConfigError(f"meta_interval ({interval}) is larger than reset_period K ({period}): trajectories would "
                          "reset before any meta-update; use meta_interval <= reset_period")
    return period, interval


# --- directions: each returns the SUM over this process's tasks; the engine divides by the global task count
# --- after an optional all-reduce, so that any sharding of tasks over processes gives the same mean.

# The sums accumulate in float64: summing a handful of fp32 values in fp64 is exact or nearly so, so the result,
# rounded back to fp32 after the all-reduce, does not depend on how tasks are split over processes.
REDUCE_DTYPE = torch.float64


#: On the CPU, a ``phi - thetas`` of more than 4x this many elements is reduced in column blocks of about this many
#: elements: no ``[T, P]`` temporary (fresh pages on every call), no slow fp64 reduction over all of it at once.
DIRECTION_BLOCK_ELEMENTS = 1 << 18


def trajectory_direction(phi: torch.Tensor, thetas: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Reptile/CTS direction (Nichol et al., 2018; Shin et al., 2021, Eq. 4): ``sum_t (phi - theta_t)``.

    Each difference is rounded to fp32 and the sum accumulates in fp64, into ``out`` if given. Large CPU inputs go
    in cache-sized column blocks: the same values as one ``torch.sum(phi - thetas, 0, dtype=float64)``, several
    times faster from about a million elements on.
    """
    if out is None:
        out = torch.empty(phi.shape, dtype=REDUCE_DTYPE, device=phi.device)
    if phi.device.type != "cpu" or thetas.numel() <= 4 * DIRECTION_BLOCK_ELEMENTS:
        return torch.sum(phi - thetas, 0, dtype=REDUCE_DTYPE, out=out)
    size, block = phi.numel(), max(DIRECTION_BLOCK_ELEMENTS // thetas.shape[0], 1024)
    for start in range(0, size, block):
        end = min(start + block, size)
        torch.sum(phi[start:end] - thetas[:, start:end], 0, dtype=REDUCE_DTYPE, out=out[start:end])
    return out


def gradient_direction(grads: torch.Tensor) -> torch.Tensor:
    """First-order MAML direction (Finn et al., 2017): ``sum_t grad L_t(theta_t)``."""
    return torch.sum(grads, 0, dtype=REDUCE_DTYPE)


def path_length_segment(
    accumulator: torch.Tensor,
    prev_thetas: torch.Tensor,
    thetas: torch.Tensor,
    prev_grads: torch.Tensor,
    prev_losses: torch.Tensor,
    losses: torch.Tensor,
    eps: float = 1e-12,
) -> None:
    """Leap (Flennerhag et al., ICLR 2019, Eq. 8, identity Jacobian), one trajectory segment per task, in place:

    ``acc_t += -(dtheta + dL grad L(theta_i)) / sqrt(|dtheta|^2 + dL^2)``, with ``dtheta = theta_{i+1} - theta_i``
    and ``dL = L(theta_{i+1}) - L(theta_i)``: the gradient of the segment's length in the loss-augmented
    parameter space, pulling the start of the segment towards its end.
    """
    dtheta = thetas - prev_thetas
    dloss = (losses - prev_losses).to(thetas.dtype)
    length = torch.sqrt(dtheta.square().sum(1) + dloss.square()).clamp_min(eps)
    dtheta.addcmul_(prev_grads, dloss[:, None])
    accumulator.sub_(dtheta / length[:, None])


def meta_update(phi: torch.nn.Parameter, direction: torch.Tensor, meta_optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """``phi' = meta_optimizer(phi, g)`` (``phi - beta g`` for SGD); returns ``delta = phi' - phi``."""
    before = phi.detach().clone()
    phi.grad = direction.to(phi.dtype)
    meta_optimizer.step()
    phi.grad = None
    return phi.detach() - before


def shift_trajectories(thetas: torch.Tensor, delta: torch.Tensor) -> None:
    """The trajectory shift: ``theta_t <- theta_t + (phi' - phi)`` for every task t, in place."""
    thetas.add_(delta)


def cts_update(
    phi: torch.nn.Parameter,
    thetas: torch.Tensor,
    meta_optimizer: torch.optim.Optimizer,
    direction: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step of Continual Trajectory Shifting (Shin et al., ICML 2021, Algorithm 1), for SGD with rate beta:

        phi'    = phi - beta * (1/T) sum_t (phi - theta_t)
        theta_t = theta_t + (phi' - phi)        for every task t

    The shift keeps every trajectory's displacement ``theta_t - phi`` and moves its start to the new ``phi``,
    so the next inner steps continue as if they had started from ``phi'`` (the paper's first-order
    approximation), and phi can be updated after every inner step instead of once per K steps.
    ``direction`` is the already averaged g (e.g. after an all-reduce across processes); by default it is
    computed from the local ``thetas``. Returns ``phi' - phi``.
    """
    if direction is None:
        direction = (trajectory_direction(phi.detach(), thetas) / thetas.shape[0]).to(phi.dtype)
    delta = meta_update(phi, direction, meta_optimizer)
    shift_trajectories(thetas, delta)
    return delta
