"""Optimizer specs as plain data (a validated schema), turned into torch optimizers."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field

from ..schema import Bool, Float, NonNegFloat, PositiveFloat, schema, to_dict, validate_schema

OPTIMIZERS = ("sgd", "adam", "adamw")


@schema
class OptimizerSpec:
    """``name`` is sgd, adam or adamw; ``momentum`` and ``nesterov`` are read by SGD, ``betas`` by Adam(W).
    Reads like a mapping too (``spec["lr"]``, ``dict(spec)``), so configs holding one stay plain-data-like."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: PositiveFloat = 1e-2
    momentum: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    weight_decay: NonNegFloat = 0.0
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    nesterov: Bool = False

    @classmethod
    def from_dict(cls, data) -> "OptimizerSpec":
        if isinstance(data, cls):
            return data
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            data = {**data, "name": data["name"].lower()}
        return validate_schema(cls, data, "optimizer.")

    def to_dict(self) -> dict:
        return to_dict(self)

    def keys(self):
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key):
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key, default)

    def build(self, params, capturable: bool = False):
        """``capturable`` (CUDA): Adam(W) keeps its step count on the device, so that a step neither reads it on
        the host nor breaks CUDA graph capture, and a masked step can restore it on the device (SGD has no count)."""
        import torch

        params = list(params)
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   nesterov=self.nesterov and self.momentum > 0)
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        extra = {"capturable": True} if capturable else {}
        return cls(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay, **extra)


__all__ = ["OPTIMIZERS", "OptimizerSpec"]
