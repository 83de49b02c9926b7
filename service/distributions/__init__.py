"""Watch-time distribution families: numpy only, vectorized over the whole batch.

Each family turns a model's per-row parameters into the numbers ranking needs; the
registry maps the family name written in a model's manifest to its class. A family
declares its parameters once (``arg_constraints``, :class:`Param`), and
``Distribution.take`` narrows any of them to some rows.
"""

from service.distributions.base import Distribution
from service.distributions.constraints import Constraint
from service.distributions.egm import EGM
from service.distributions.exponential import Exponential
from service.distributions.histogram import Histogram
from service.distributions.normal import Normal
from service.distributions.params import Arg, Param, ParameterError
from service.distributions.quantile import Quantile
from service.distributions.rootfind import Searchable
from service.distributions.survival import Survival
from service.distributions.ziln import ZILN

_CLASSES = (EGM, Normal, Exponential, ZILN, Histogram, Survival, Quantile)
FAMILIES: dict[str, type[Distribution]] = {cls.family: cls for cls in _CLASSES}
# mypy checks here that every family gives the quantile search what it needs.
_SEARCHABLE: tuple[type[Searchable], ...] = _CLASSES


def get_family(name: str) -> type[Distribution]:
    """The class serving family ``name``; KeyError names the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown distribution family {name!r}; known: {sorted(FAMILIES)}") from None


__all__ = [
    "EGM",
    "FAMILIES",
    "ZILN",
    "Arg",
    "Constraint",
    "Distribution",
    "Exponential",
    "Histogram",
    "Normal",
    "Param",
    "ParameterError",
    "Quantile",
    "Searchable",
    "Survival",
    "get_family",
]
