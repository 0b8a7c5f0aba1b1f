"""The meta-learning core: plain torch, no I/O, no Accelerate, no Hub."""
from .engine import TrajectoryEngine
from .step import StepResult, classification_loss
from .layout import FlatLayout
from .optim import OptimizerSpec
from .rules import (
    RULES,
    MetaRule,
    cts_update,
    get_rule,
    gradient_direction,
    meta_update,
    path_length_segment,
    schedule,
    shift_trajectories,
    trajectory_direction,
)

__all__ = [
    "RULES", "FlatLayout", "MetaRule", "OptimizerSpec", "StepResult", "TrajectoryEngine", "classification_loss",
    "cts_update", "get_rule", "gradient_direction", "meta_update", "path_length_segment", "schedule",
    "shift_trajectories",
    "trajectory_direction",
]
