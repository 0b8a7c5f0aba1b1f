"""The meta-learning core: plain torch, no I/O, no Accelerate, no Hub."""
from .engine import FlatLayout, StepResult, TrajectoryEngine, classification_loss
from .optim import OptimizerSpec
from .rules import (
    RULES,
    MetaRule,
    cts_update,
    get_rule,
    gradient_direction,
    meta_update,
    path_length_segment,
    shift_trajectories,
    trajectory_direction,
)

__all__ = [
    "RULES", "FlatLayout", "MetaRule", "OptimizerSpec", "StepResult", "TrajectoryEngine", "classification_loss",
    "cts_update", "get_rule", "gradient_direction", "meta_update", "path_length_segment", "shift_trajectories",
    "trajectory_direction",
]
