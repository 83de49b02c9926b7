"""Which number a model serves as ``point_s``: its family's own point, or its median.

MAE is minimised by the median, and for some models the median of the served distribution is
a better point than the one the network emits (``reports/tuning.md``, "The point"). Such a
model says so in its manifest (``"point": "median"``), and the service answers the median of
the very distribution it serves, so that ``point_s`` agrees with ``quantiles`` at 0.5 to the
last bit. The rule lives in a subclass of the family, not in a flag the callers must pass:
every path that reads a point (the post-processor, the batch's narrowed rows, the offline
scoring) calls :meth:`Distribution.point` and gets the rule with the class.
"""

from __future__ import annotations

import functools
from typing import ClassVar, Literal

import numpy as np

from service.distributions.arrays import FloatArray
from service.distributions.base import Distribution

PointRule = Literal["model", "median"]
"""``model``: the family's :meth:`~Distribution.point`; ``median``: its 0.5 quantile."""

MEDIAN_LEVEL = np.array([0.5])


@functools.cache
def _median_pointed(cls: type[Distribution]) -> type[Distribution]:
    """``cls`` whose point is the median (one class per family, built once)."""

    class MedianPoint(cls):  # type: ignore[valid-type, misc]
        point_is_median: ClassVar[bool] = True

        def point(self) -> FloatArray:
            """The median: one quantile search per row."""
            return self.icdf(MEDIAN_LEVEL)[:, 0]

    MedianPoint.__name__ = MedianPoint.__qualname__ = f"{cls.__name__}MedianPoint"
    return MedianPoint


def with_point(cls: type[Distribution], rule: PointRule) -> type[Distribution]:
    """The family ``cls`` serving ``rule`` as its point."""
    return _median_pointed(cls) if rule == "median" else cls
