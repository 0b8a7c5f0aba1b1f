"""The old name of :mod:`ctinit.models.for_image_classification` (kept for one release; import from there or from
:mod:`ctinit.models`)."""
from .for_image_classification import CtinitConvNetForImageClassification, CtinitResNetForImageClassification

__all__ = ["CtinitConvNetForImageClassification", "CtinitResNetForImageClassification"]
