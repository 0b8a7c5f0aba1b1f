"""Leap's running state: the path length of every task's trajectory, accumulated segment by segment.

Each inner step closes a segment (theta, grad, loss at the step before -> this step); at a meta-step the last segment
is closed with one extra forward at the current thetas, and the accumulated direction, averaged over segments so
that its size does not grow with K, is returned and cleared.
"""
from __future__ import annotations

import torch

from .rules import REDUCE_DTYPE, path_length_segment


class LeapState:
    """Per task: the accumulated path-length direction and the open segment's start (``[T, P]`` device tensors)."""

    def __init__(self, thetas: torch.Tensor):
        self.tensors = {"acc": torch.zeros_like(thetas), "prev_thetas": torch.zeros_like(thetas),
                        "prev_grads": torch.zeros_like(thetas),
                        "prev_losses": torch.zeros(thetas.shape[0], device=thetas.device)}
        self.segments = 0
        self.has_prev = False

    @property
    def prev_losses(self) -> torch.Tensor:
        return self.tensors["prev_losses"]

    def record(self, thetas: torch.Tensor, grads: torch.Tensor, losses: torch.Tensor) -> None:
        """Close the previous segment with this step's loss, then remember (theta, grad, loss) at this step."""
        s = self.tensors
        if self.has_prev:
            path_length_segment(s["acc"], s["prev_thetas"], thetas, s["prev_grads"], s["prev_losses"], losses)
            self.segments += 1
        s["prev_thetas"].copy_(thetas)
        s["prev_grads"].copy_(grads)
        s["prev_losses"].copy_(losses)
        self.has_prev = True

    def take_direction(self) -> torch.Tensor:
        """The summed direction averaged over segments (so the step size does not grow with K); clears it."""
        direction = torch.sum(self.tensors["acc"], 0, dtype=REDUCE_DTYPE) / max(self.segments, 1)
        self.tensors["acc"].zero_()
        self.segments = 0
        return direction

    def new_trajectory(self) -> None:
        """At a reset: no open segment."""
        self.has_prev = False

    def state_dict(self) -> dict:
        return {**{k: v.clone() for k, v in self.tensors.items()}, "segments": self.segments, "has_prev": self.has_prev}

    def load_state_dict(self, state: dict) -> None:
        for k, v in self.tensors.items():
            v.copy_(state[k])
        self.segments, self.has_prev = state["segments"], state["has_prev"]
