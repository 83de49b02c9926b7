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
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from service.distributions.arrays import FloatArray
from service.distributions.base import Distribution
from service.distributions.cache import cached_rows

PointRule = Literal["model", "median"]
"""``model``: the family's :meth:`~Distribution.point`; ``median``: its 0.5 quantile."""

D = TypeVar("D", bound=Distribution)


@functools.cache
def _median_pointed(cls: type[D]) -> type[D]:
    """``cls`` whose point is the median (one class per family, built once)."""

    class MedianPoint(cls):  # type: ignore[valid-type, misc]
        @cached_rows
        def median(self) -> FloatArray:
            """One quantile search per row, unless a shared 0.5 level already ran it."""
            return super().icdf(0.5)

        def point(self) -> FloatArray:
            return self.median

        def icdf(self, levels: npt.ArrayLike) -> FloatArray:
            """The family's quantiles; a 0.5 among shared levels is kept as the median
            (the search gives each level the same bits alone or among others), so that a
            request asking for it pays for one search, not two."""
            out = super().icdf(levels)
            q = np.asarray(levels)
            if q.ndim <= 1 and "median" not in self.__dict__:
                hit = np.flatnonzero(q.reshape(-1) == 0.5)
                if hit.size:
                    self.__dict__["median"] = out if q.ndim == 0 else out[:, int(hit[0])]
            return out

    MedianPoint.__name__ = MedianPoint.__qualname__ = f"{cls.__name__}MedianPoint"
    return MedianPoint


def with_point(cls: type[D], rule: PointRule) -> type[D]:
    """The family ``cls`` serving ``rule`` as its point."""
    return _median_pointed(cls) if rule == "median" else cls
