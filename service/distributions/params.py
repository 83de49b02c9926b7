"""A family's parameters, declared once: their per-row shape, whether a model must emit
them, and their constraint.

Each family lists its parameters in one mapping, ``arg_constraints``, as
``torch.distributions`` does; everything else about them is derived from it: the names
the repository checks a model's outputs against, the parsing and validation of what a
model emits, and the rows :meth:`Distribution.take` slices.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self, overload

import numpy as np
import numpy.typing as npt

from service.distributions.arrays import FloatArray
from service.distributions.constraints import Constraint


class ParameterError(ValueError):
    """Raised when a family is given parameters it cannot represent."""


@dataclass(frozen=True)
class Param:
    """One parameter of a family.

    Per row it is a number, ``(n,)``, or with ``vector`` a vector, ``(n, m)``; a
    ``shared`` vector may instead be given once for every row, ``(m,)`` (a grid of bucket
    edges all rows use), and is then never sliced by row.
    """

    constraint: Constraint
    vector: bool = False
    required: bool = True
    shared: bool = False

    @property
    def event_dim(self) -> int:
        """Dimensions of one row's value: 0 for a number, 1 for a vector."""
        return int(self.vector)

    def parse(self, name: str, value: npt.ArrayLike) -> FloatArray:
        """``value`` as float64 of the declared rank, refusing non-finite values; the
        constraint is checked later."""
        arr = np.asarray(value, dtype=np.float64)
        once = self.shared and arr.ndim == self.event_dim
        ndim = self.event_dim if once else self.event_dim + 1
        if arr.ndim != ndim:
            raise ParameterError(
                f"parameter {name!r} must have {ndim} dimension(s), got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ParameterError(f"parameter {name!r} holds NaN or infinity")
        return arr

    def per_row(self, value: FloatArray) -> bool:
        """Whether a parsed ``value`` has a leading row axis (not a shared vector)."""
        return value.ndim > self.event_dim


class Arg:
    """A family's attribute for one of its declared parameters, as parsed.

    ``mu = Arg()`` reads parameter ``mu``; ``lam = Arg("lambda")`` gives a parameter whose
    name is no identifier an attribute of its own. It holds nothing: the value lives with
    the others in the instance's parsed parameters, which is what ``take`` slices.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or ""

    def __set_name__(self, owner: type, attr: str) -> None:
        self.name = self.name or attr

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> FloatArray: ...

    def __get__(self, instance: Any, owner: type | None = None) -> FloatArray | Self:
        if instance is None:
            return self
        value: FloatArray = instance._args[self.name]
        return value


def check_args(cls: type, declared: Mapping[str, Param]) -> None:
    """Refuse, as a family is defined, an :class:`Arg` of a parameter it does not declare."""
    for attr in dir(cls):
        found = inspect.getattr_static(cls, attr)
        if isinstance(found, Arg) and found.name not in declared:
            raise TypeError(f"{cls.__name__}.{attr} reads {found.name!r}, which is not declared")


def shapes(values: Mapping[str, FloatArray]) -> str:
    """The parameters' shapes, for an error message."""
    return ", ".join(f"{name} {arr.shape}" for name, arr in values.items())


def parse_params(
    family: str, declared: Mapping[str, Param], given: Mapping[str, npt.ArrayLike]
) -> tuple[dict[str, FloatArray], int]:
    """Everything the declaration says of ``given``: names, ranks, finiteness, one row count,
    constraints. Returns the parsed values, in declaration order, and the row count."""
    missing = [name for name, p in declared.items() if p.required and name not in given]
    if missing:
        raise ParameterError(f"{family}: missing parameter(s) {missing}")
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ParameterError(f"{family}: unknown parameter(s) {unknown}")
    values = {name: p.parse(name, given[name]) for name, p in declared.items() if name in given}
    rows = {arr.shape[0] for name, arr in values.items() if declared[name].per_row(arr)}
    if len(rows) != 1:
        raise ParameterError(f"{family}: inconsistent shapes {shapes(values)}")
    for name, arr in values.items():
        constraint = declared[name].constraint
        if not constraint.check(arr):
            raise ParameterError(f"{family}: {name} must {constraint.wording}")
    return values, rows.pop()
