"""``Distribution.take`` and the parameter declaration it is derived from.

A family's rows are narrowed by the quantile search and by the offline evaluation; the
child must be exactly the distribution built from the rows of the parameters, whatever
the parent had already computed, and a parameter or cached value a family adds must be
narrowed without ``take`` being told about it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from service.distributions import (
    EGM,
    FAMILIES,
    Arg,
    Distribution,
    Exponential,
    Param,
    ParameterError,
    get_family,
)
from service.distributions.cache import Cached, cached, cached_rows
from service.distributions.constraints import nonnegative, real

Arr = npt.NDArray[np.float64]
N = 60
ROWS = np.array([5, 0, 59, 5, 17, 33, 2, 41, 41, 8])


def egm_params(
    rng: np.random.Generator, k: int, atom: bool, low_mu: bool = False
) -> dict[str, Arr]:
    out = {
        "lambda": rng.lognormal(np.log(0.7), 0.8, N),
        "weights": rng.dirichlet(np.ones(k + 1), N),
        "mu": rng.normal(-30.0 if low_mu else 10.0, 25.0, (N, k)),
        "sigma": rng.lognormal(1.5, 1.2, (N, k)),
    }
    if atom:
        out["p0"] = rng.uniform(0.0, 0.4, N)
    return out


def cases() -> dict[str, tuple[str, dict[str, Arr]]]:
    rng = np.random.default_rng(2024)
    grid = np.concatenate([np.zeros((N, 1)), np.cumsum(rng.uniform(0.1, 20, (N, 5)), 1)], 1)
    return {
        "egm": ("egm", egm_params(rng, 4, atom=True)),
        "egm-no-atom": ("egm", egm_params(rng, 3, atom=False)),
        "egm-low-means": ("egm", egm_params(rng, 5, atom=True, low_mu=True)),
        "normal": ("normal", {"loc": rng.normal(5, 15, N), "scale": rng.lognormal(1, 1.5, N)}),
        "exponential": ("exponential", {"rate": rng.lognormal(-1, 2, N)}),
        "ziln": (
            "ziln",
            {
                "p0": rng.uniform(0, 0.9, N),
                "mu": rng.normal(1, 2, N),
                "sigma": rng.lognormal(0, 1, N),
            },
        ),
        "histogram-shared": (
            "histogram",
            {"probs": rng.uniform(0, 3, (N, 5)), "edges": np.array([0, 1, 2, 5, 10, 30.0])},
        ),
        "histogram-per-row": ("histogram", {"probs": rng.uniform(0, 3, (N, 5)), "edges": grid}),
        "survival-shared": (
            "survival",
            {"thresholds": np.array([1, 3, 7, 15, 40.0]), "sf": rng.uniform(0, 1, (N, 5))},
        ),
        "survival-per-row": (
            "survival",
            {"thresholds": grid[:, 1:], "sf": rng.uniform(0, 1, (N, 5))},
        ),
        "quantile-shared": (
            "quantile",
            {
                "levels": np.array([0.05, 0.25, 0.5, 0.75, 0.95]),
                "values": np.cumsum(rng.uniform(0, 20, (N, 5)) * (rng.random((N, 5)) > 0.2), 1)
                + np.array([0, 0, 0, 0, 1.0]),
            },
        ),
        "quantile-per-row": (
            "quantile",
            {
                "levels": np.sort(rng.uniform(0.01, 0.99, (N, 5)), 1),
                "values": grid[:, 1:],
                "point": rng.uniform(0, 30, N),
            },
        ),
    }


CASES = cases()


def sliced(cls: type[Distribution], params: Mapping[str, Arr], rows: Arr) -> dict[str, Arr]:
    """The rows of each declared per-row parameter; shared grids as they are."""
    return {
        name: value[rows] if cls.arg_constraints[name].per_row(value) else value
        for name, value in params.items()
    }


def answers(d: Distribution) -> dict[str, Any]:
    """Everything a distribution answers, kernels included."""
    rng = np.random.default_rng(5)
    t = np.ascontiguousarray(rng.lognormal(1.0, 2.0, (d.n, 3)))
    edges = np.array([[0.0, 3.0], [3.0, 10.0], [10.0, np.inf]])
    out: dict[str, Any] = {
        "params": d.params(),
        "mean": d.mean(),
        "variance": d.variance(),
        "point": d.point(),
        "atom": d.atom(),
        "upper_guess": d.upper_guess(),
        "cdf": d.cdf(np.array([0.0, 0.5, 3.0, 40.0, np.inf])),
        "log_prob": d.log_prob(np.array([0.0, 0.5, 3.0, 40.0])),
        "icdf": d.icdf(np.array([0.01, 0.1, 0.5, 0.9, 0.99])),
        "mass": d.interval_mass_and_cdf(edges, 3.0),
        "cdf_pdf": d.cdf_pdf(t),
    }
    if d.has_float32_kernel:
        out["cdf_pdf32"] = d.cdf_pdf32(t.astype(np.float32))
    if d.has_float32_slope:
        out["cdf_pdf_dpdf32"] = d.cdf_pdf_dpdf32(t.astype(np.float32))
    return out


def assert_identical(got: Any, want: Any, where: str = "") -> None:
    """Equal values, shapes and dtypes, bit for bit (NaN equal to NaN)."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            assert_identical(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_identical(g, w, f"{where}[{i}]")
    else:
        g, w = np.asarray(got), np.asarray(want)
        assert g.dtype == w.dtype and g.shape == w.shape, where
        assert g.tobytes() == w.tobytes(), where


@pytest.mark.parametrize("warm", [False, True], ids=["cold-parent", "warm-parent"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_take_is_the_distribution_of_the_sliced_parameters(case: str, warm: bool) -> None:
    family, params = CASES[case]
    cls = get_family(family)
    parent = cls.from_params(params)
    if warm:
        # Every cached value of the parent is computed before the rows are taken.
        answers(parent)
    fresh = cls.from_params(sliced(cls, params, ROWS))
    child = parent.take(ROWS)
    assert type(child) is cls and child.n == ROWS.size
    assert_identical(answers(child), answers(fresh), case)
    # A child of a child, and a single row, as the quantile search narrows.
    inner = np.array([3, 3, 0, 7])
    assert_identical(
        answers(child.take(inner)),
        answers(cls.from_params(sliced(cls, params, ROWS[inner]))),
        case,
    )
    assert_identical(
        answers(parent.take(np.array([9]))),
        answers(cls.from_params(sliced(cls, params, np.array([9])))),
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_is_parameters_and_declared_caches(case: str) -> None:
    """What ``take`` builds a child from is all a family holds: a value set by other means
    would be neither sliced nor rebuilt."""
    family, params = CASES[case]
    cls = get_family(family)
    d = cls.from_params(params)
    answers(d)
    undeclared = [
        name
        for name in vars(d)
        if name not in ("n", "_args") and not isinstance(getattr(cls, name, None), Cached)
    ]
    assert undeclared == []


def test_batch_caches_stay_with_the_parent() -> None:
    """A flag over the whole batch and the float32 constants are the parent's, not the
    child's rows: the child derives its own."""
    params = egm_params(np.random.default_rng(1), 3, atom=True)
    params["mu"][:, :] = 20.0
    params["mu"][7, 1] = -5.0  # one Gaussian with its mean below zero, in row 7 only
    parent = EGM.from_params(params)
    answers(parent)
    assert parent.any_upper
    child = parent.take(np.array([1, 2, 3]))
    assert "any_upper" not in vars(child) and "_constants32" not in vars(child)
    assert not child.any_upper
    assert child._constants32["mu"].shape == (3, 3)
    # The per-row constants the parent computed are carried, as rows.
    np.testing.assert_array_equal(vars(child)["w_sf"], parent.w_sf[[1, 2, 3]])


def test_take_refuses_what_is_not_row_indices() -> None:
    d = CASES["normal"][1]
    dist = get_family("normal").from_params(d)
    with pytest.raises(TypeError):
        dist.take(np.ones(N, dtype=bool))
    with pytest.raises(TypeError):
        dist.take(np.array([[0, 1]]))


# ----- a family extended by declaration alone ------------------------------------------------


class DelayedExponential(Exponential):
    """An exponential starting after a per-row delay, with per-row tags that change nothing.

    It adds two parameters and two cached values, and touches neither ``take`` nor the
    constructor: both follow the declaration.
    """

    family: ClassVar[str] = "delayed-exponential"
    arg_constraints: ClassVar[Mapping[str, Param]] = {
        **Exponential.arg_constraints,
        "delay": Param(nonnegative),
        "tags": Param(real, vector=True, required=False),
    }

    @cached_rows
    def end_of_delay_density(self) -> Arr:
        return self.rate.copy()

    @cached
    def any_delay(self) -> bool:
        return bool((self._args["delay"] > 0).any())

    def params(self) -> dict[str, Arr]:
        return {"rate": self.rate, "delay": self._args["delay"]}

    def mean(self) -> Arr:
        return self._args["delay"] + 1.0 / self.rate

    def cdf_pdf(self, t: Arr) -> tuple[Arr, Arr]:
        x = np.maximum(t - self._args["delay"][:, None], 0.0)
        inside = t >= self._args["delay"][:, None]
        decay = np.exp(-self.rate[:, None] * x)
        return 1.0 - decay, np.where(inside, self.end_of_delay_density[:, None] * decay, 0.0)

    def _icdf(self, q: Arr) -> Arr:
        return Distribution._icdf(self, q)


def test_a_new_parameter_is_sliced_without_touching_take() -> None:
    rng = np.random.default_rng(4)
    params = {
        "rate": rng.uniform(0.1, 2.0, N),
        "delay": rng.uniform(0.0, 5.0, N),
        "tags": rng.normal(size=(N, 2)),
    }
    assert DelayedExponential.required_params == ("rate", "delay")
    assert DelayedExponential.optional_params == ("tags",)
    parent = DelayedExponential.from_params(params)
    parent.icdf(np.array([0.2, 0.7]))  # fills the caches, and narrows rows in the search
    assert parent.any_delay
    child = parent.take(ROWS)
    np.testing.assert_array_equal(child._args["delay"], params["delay"][ROWS])
    np.testing.assert_array_equal(child._args["tags"], params["tags"][ROWS])
    np.testing.assert_array_equal(vars(child)["end_of_delay_density"], params["rate"][ROWS])
    assert "any_delay" not in vars(child)
    fresh = DelayedExponential.from_params({k: v[ROWS] for k, v in params.items()})
    levels = np.array([0.05, 0.5, 0.95])
    assert_identical(child.icdf(levels), fresh.icdf(levels))
    assert_identical(child.cdf(np.array([0.5, 4.0])), fresh.cdf(np.array([0.5, 4.0])))
    with pytest.raises(ParameterError):
        DelayedExponential.from_params({**params, "delay": -params["delay"]})


# ----- the declaration and what is derived from it -------------------------------------------


def test_an_attribute_of_an_undeclared_parameter_is_refused() -> None:
    with pytest.raises(TypeError, match="'scale', which is not declared"):

        class Misnamed(Exponential):
            family: ClassVar[str] = "misnamed"
            scale = Arg()


def test_required_and_optional_names_come_from_the_declaration() -> None:
    assert EGM.required_params == ("lambda", "weights", "mu", "sigma")
    assert EGM.optional_params == ("p0", "point")
    for cls in FAMILIES.values():
        declared = cls.arg_constraints
        assert cls.required_params == tuple(k for k, p in declared.items() if p.required)
        assert cls.optional_params == tuple(k for k, p in declared.items() if not p.required)


GARBAGE: list[tuple[str, Callable[[dict[str, Arr]], None], str]] = [
    ("egm", lambda p: p.update(mu=p["mu"][:, :-1]), "inconsistent shapes"),
    ("egm", lambda p: p.update(p0=np.ones(N)), "p0 must lie in [0, 1)"),
    (
        "egm",
        lambda p: p.update(weights=np.zeros_like(p["weights"]), p0=np.zeros(N)),
        "sum to zero",
    ),
    ("normal", lambda p: p.update(loc=p["loc"][:-1]), "inconsistent shapes"),
    ("histogram", lambda p: p.update(edges=p["edges"][:-1]), "do not fit"),
    ("histogram", lambda p: p.update(edges=p["edges"][::-1]), "strictly increasing"),
    ("histogram", lambda p: p.update(probs=0.0 * p["probs"]), "positive entry"),
    ("survival", lambda p: p.update(thresholds=np.array([1.0, 2, 3, 4, 1e308])), "too large"),
    ("survival", lambda p: p.update(thresholds=np.array([1.0, 2])), "do not fit"),
    ("quantile", lambda p: p.update(levels=p["levels"][:-1]), "do not fit"),
    ("quantile", lambda p: p.update(levels=p["levels"][::-1]), "strictly increasing"),
    ("quantile", lambda p: p.update(values=p["values"][:, ::-1]), "non-decreasing"),
    ("quantile", lambda p: p.update(values=0.0 * p["values"]), "last value must be > 0"),
]


@pytest.mark.parametrize(("family", "spoil", "message"), GARBAGE)
def test_refusals_name_the_rule(
    family: str, spoil: Callable[[dict[str, Arr]], None], message: str
) -> None:
    case = next(p for f, p in CASES.values() if f == family)
    params = {k: v.copy() for k, v in case.items()}
    spoil(params)
    with pytest.raises(ParameterError, match=re.escape(message)):
        get_family(family).from_params(params)
