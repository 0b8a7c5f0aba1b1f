"""Optimizer specs as plain data, turned into torch optimizers (the schema lives in ctinit/config.py)."""
from __future__ import annotations

from ..config import OPTIMIZERS, OptimizerSpec

__all__ = ["OPTIMIZERS", "OptimizerSpec"]
