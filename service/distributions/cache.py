"""Values a distribution derives from its parameters on first use, and keeps.

Two kinds, told apart by the decorator, so that :meth:`Distribution.take` needs no list
of attributes kept by hand:

* :func:`cached_rows`: an array whose row ``i`` depends only on row ``i`` of the
  parameters (the kernels' per-row constants). A child built by ``take`` receives the
  rows of what its parent already computed, which equal what it would compute itself,
  bit for bit, and cost one gather instead of the derivation (transcendental functions
  over every component).
* :func:`cached`: anything else (a flag over the whole batch, constants cast for one
  kernel, moments). ``take`` leaves these behind; the child derives its own on first use.

Unlike ``functools.cached_property`` on Python 3.11 these take no lock: a distribution
is used by one thread, and a lock shared by every instance would serialise requests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar, overload

import numpy as np

T = TypeVar("T")
A = TypeVar("A", bound="np.ndarray[Any, Any]")


class Cached(Generic[T]):
    """A value computed on first access and stored in the instance under the same name.

    A non-data descriptor: once stored, the instance's own attribute is found first, so
    later reads cost an ordinary attribute lookup.
    """

    def __init__(self, func: Callable[[Any], T], per_row: bool) -> None:
        self.func = func
        self.per_row = per_row
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | Self:
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.name] = value
        return value


def cached(func: Callable[[Any], T]) -> Cached[T]:
    """Derived on first use; not carried by ``take`` (the child derives its own)."""
    return Cached(func, per_row=False)


def cached_rows(func: Callable[[Any], A]) -> Cached[A]:
    """Derived row by row on first use; ``take`` gives the child the rows already computed."""
    return Cached(func, per_row=True)


def carried(cls: type) -> tuple[str, ...]:
    """Names of the per-row cached values of ``cls``, overrides resolved as lookup resolves them."""
    return tuple(
        name
        for name in dir(cls)
        if isinstance(found := inspect.getattr_static(cls, name), Cached) and found.per_row
    )
