"""What a family's parameter values must satisfy, after ``torch.distributions.constraints``.

A constraint is checked once on the whole batch, so a check is a few vectorized passes
over the parameter however many rows it has. Values are finite by the time a constraint
sees them (parsing refuses NaN and infinity), so none of the checks repeats that. A
vector parameter may have zero entries per row; every check below then holds, and the
family's own check of how its parameters' lengths relate refuses the empty vector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.distributions.arrays import FloatArray


@dataclass(frozen=True)
class Constraint:
    """A condition on every value of a parameter, and how an error message states it."""

    #: completes "<parameter> must ...", as in "sigma must be positive"
    wording: str
    check: Callable[[FloatArray], bool]


real = Constraint("be a number", lambda v: True)
positive = Constraint("be positive", lambda v: bool((v > 0).all()))
nonnegative = Constraint("be >= 0", lambda v: bool((v >= 0).all()))
unit_interval = Constraint("lie in [0, 1]", lambda v: bool(((v >= 0) & (v <= 1)).all()))
half_open_unit_interval = Constraint("lie in [0, 1)", lambda v: bool(((v >= 0) & (v < 1)).all()))
#: weights of buckets, renormalised per row: none negative, and not all zero in a row
unnormalised_simplex = Constraint(
    "be >= 0 with a positive entry in every row",
    lambda v: bool((v >= 0).all() and (v > 0).any(axis=-1).all()),
)
#: bucket edges from zero: the first is 0 and each next one is larger
increasing_from_zero = Constraint(
    "start at 0 and be strictly increasing",
    lambda v: bool((v[..., :1] == 0).all() and (np.diff(v, axis=-1) > 0).all()),
)
#: thresholds on (0, inf), each larger than the one before
positive_increasing = Constraint(
    "be > 0 and strictly increasing",
    lambda v: bool((v > 0).all() and (np.diff(v, axis=-1) > 0).all()),
)
