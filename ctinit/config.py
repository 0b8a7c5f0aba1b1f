"""Former home of the schema machinery and the domain schemas; kept for one release as re-exports.

The machinery is :mod:`ctinit.schema`; :class:`FinetuneConfig` lives in :mod:`ctinit.finetune`,
:class:`OptimizerSpec` in :mod:`ctinit.meta.optim`, the meta-training defaults in :mod:`ctinit.meta.defaults`.
"""
from __future__ import annotations

from .finetune import FinetuneConfig
from .meta.defaults import INNER_OPTIMIZER, META_OPTIMIZER, RESET_PERIOD
from .meta.optim import OPTIMIZERS, OptimizerSpec
from .schema import *  # noqa: F401,F403
from .schema import __all__ as _schema_names

__all__ = [*_schema_names, "FinetuneConfig", "INNER_OPTIMIZER", "META_OPTIMIZER", "OPTIMIZERS", "OptimizerSpec",
           "RESET_PERIOD"]
