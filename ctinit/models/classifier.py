"""The old name of :mod:`ctinit.models.image_classifier` (kept for one release; import from there or from
:mod:`ctinit.models`)."""
from .image_classifier import ImageClassifier, TaskHead

__all__ = ["ImageClassifier", "TaskHead"]
