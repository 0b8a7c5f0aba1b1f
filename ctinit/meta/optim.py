"""Optimizer specs as plain data, turned into torch optimizers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class OptimizerSpec:
    """``name`` is sgd, adam or adamw; ``momentum`` and ``nesterov`` are read by SGD, ``betas`` by Adam(W)."""

    name: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = field(default=(0.9, 0.999))
    nesterov: bool = False

    def __post_init__(self):
        self.name = str(self.name).lower()
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{self.name}': choose one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ConfigError(f"optimizer lr must be > 0, got {self.lr}")
        self.betas = tuple(float(b) for b in self.betas)

    @classmethod
    def from_dict(cls, data: dict | "OptimizerSpec") -> "OptimizerSpec":
        if isinstance(data, OptimizerSpec):
            return data
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown optimizer keys {sorted(unknown)}: use {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def build(self, params: Iterable[torch.nn.Parameter], capturable: bool = False) -> torch.optim.Optimizer:
        """``capturable`` (CUDA): Adam(W) keeps its step count on the device, so that a step neither reads it on
        the host nor breaks CUDA graph capture, and a masked step can restore it on the device (SGD has no count)."""
        params = list(params)
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   nesterov=self.nesterov and self.momentum > 0)
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        extra = {"capturable": True} if capturable else {}
        return cls(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay, **extra)
