"""The native API's ``curve`` option, for every shipped model, through the real ASGI app.

The curve's CDF is checked against the service's own other answers (the mass of ``[0, t]``
and the quick-skip probability at ``t`` are both ``F(t)``), its density against the rule
its answer states, and every malformed or oversized ``curve`` gets a 4xx naming it.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from service.distributions import get_family
from service.runtime.prediction import MAX_CURVE_POINTS
from service.runtime.repository import ModelRepository
from tests.support.api import AppClient, app_client, held_out_day, json_columns

MAX_VALUES = 20_000


@pytest.fixture(scope="module")
def client(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository, max_curve_values=MAX_VALUES)


@pytest.fixture(scope="module")
def models(repository: ModelRepository) -> list[str]:
    return sorted({m.name for m in repository})


def features(repository: ModelRepository, n: int, start: int = 0) -> dict[str, list[Any]]:
    """``n`` test-day rows with every column any shipped model reads."""
    sources = sorted({s for m in repository for s in m.sources})
    return json_columns(held_out_day().iloc[start : start + n], sources)


def test_every_model_draws_its_own_cdf(
    client: AppClient, repository: ModelRepository, models: list[str]
) -> None:
    rows = features(repository, 12)
    points, max_s = 97, 120.0
    t = np.linspace(0.0, max_s, points)
    intervals = [[0.0, float(x)] for x in t]
    for name in models:
        body = {"features": rows, "curve": {"points": points, "max_s": max_s}}
        got = client.post(
            f"/v1/models/{name}/predict",
            json={**body, "intervals": intervals, "return_params": True},
        )
        assert got.status_code == 200, (name, got.text)
        doc = got.json()
        curve = doc["curve"]
        family = get_family(doc["family"])
        assert curve["density"] == family.curve_density, name
        assert curve["note"]
        np.testing.assert_array_equal(curve["t_s"], t)
        cdf, pdf = np.array(curve["cdf"]), np.array(curve["pdf"])
        assert cdf.shape == pdf.shape == (12, points)
        # F(t) three ways: the curve, the mass of [0, t], and the quick-skip probability
        np.testing.assert_allclose(cdf, doc["intervals"]["mass"], rtol=0, atol=1e-12)
        at = client.post(
            f"/v1/models/{name}/predict",
            json={"features": rows, "quick_skip_threshold_s": float(t[40])},
        ).json()
        np.testing.assert_allclose(cdf[:, 40], at["quick_skip_prob"], rtol=0, atol=1e-12)
        # Atoms: at 0 they are F(0); listed only when some row holds one.
        atoms_at, atoms_mass = np.array(curve["atoms"]["at_s"]), np.array(curve["atoms"]["mass"])
        assert atoms_at.shape == atoms_mass.shape and atoms_at.shape[0] == 12
        at_zero = np.where(atoms_at == 0, atoms_mass, 0.0).sum(axis=1)
        np.testing.assert_allclose(at_zero, cdf[:, 0], atol=1e-12)
        if atoms_mass.size:
            assert (atoms_mass > 0).any(axis=0).all()
        assert (np.diff(cdf, axis=1) >= 0).all() and (pdf >= 0).all()
        if curve["density"] == "step":
            held = np.zeros((12, points - 1))
            for j in range(atoms_at.shape[1]):  # a few atoms: a loop over them, not rows
                cell = np.searchsorted(t, atoms_at[:, j], side="left") - 1
                ok = (cell >= 0) & (cell < points - 1)
                held[np.flatnonzero(ok), cell[ok]] += atoms_mass[ok, j]
            rectangles = pdf[:, :-1] * np.diff(t) + held
            np.testing.assert_allclose(rectangles, np.diff(cdf, axis=1), rtol=1e-9, atol=1e-12)
        else:
            # the density of the family the answer's own parameters make, at the grid
            params = {k: np.asarray(v, dtype=np.float64) for k, v in doc["params"].items()}
            _, want = family.from_params(params).cdf_pdf(t[None, :])
            np.testing.assert_allclose(pdf, np.broadcast_to(want, pdf.shape), rtol=1e-12)
            # (the trapezoid rule's accuracy is tested in tests/distributions/test_curve.py:
            # on this 1.25 s grid a lognormal's rise next to 0 is finer than the step)


def test_row_form_no_rows_and_defaults(client: AppClient, repository: ModelRepository) -> None:
    rows = features(repository, 3)
    instances = [{k: v[i] for k, v in rows.items()} for i in range(3)]
    a = client.post("/v1/predict", json={"features": rows, "curve": {}}).json()["curve"]
    b = client.post("/v1/predict", json={"instances": instances, "curve": {}}).json()["curve"]
    assert a == b
    assert len(a["t_s"]) == 200 and a["t_s"][-1] == 600.0  # the documented defaults
    empty = {k: [] for k in rows}
    doc = client.post("/v1/predict", json={"features": empty, "curve": {"points": 3}}).json()
    assert doc["n"] == 0 and doc["curve"]["pdf"] == [] and doc["curve"]["cdf"] == []
    plain = client.post("/v1/predict", json={"features": rows, "curve": None}).json()
    assert "curve" not in plain


def test_concurrent_requests_get_their_own_curves(
    client: AppClient, repository: ModelRepository
) -> None:
    asks = [
        {"points": 11, "max_s": 30.0},
        {"points": 50, "max_s": 300.0},
        None,
        {"points": 11, "max_s": 30.0},
    ]
    bodies = []
    for i, ask in enumerate(asks):
        body: dict[str, Any] = {"features": features(repository, 2 + i, 10 * i)}
        if ask is not None:
            body["curve"] = ask
        bodies.append(body)
    together = client.gather([("POST", "/v1/predict", {"json": b}) for b in bodies * 3])
    alone = [client.post("/v1/predict", json=b).json() for b in bodies]
    for i, r in enumerate(together):
        assert r.status_code == 200, r.text
        assert r.json() == alone[i % len(bodies)]


BAD = [
    ([], "curve"),
    ("200", "curve"),
    ({"points": -1}, "curve.points"),
    ({"points": 0}, "curve.points"),
    ({"points": 1}, "curve.points"),
    ({"points": MAX_CURVE_POINTS + 1}, "curve.points"),
    ({"points": 10**12}, "curve.points"),
    ({"points": 1e30}, "curve.points"),
    ({"points": 20.5}, "curve.points"),
    ({"points": "20"}, "curve.points"),
    ({"points": True}, "curve.points"),
    ({"points": None}, "curve.points"),
    ({"points": [20]}, "curve.points"),
    ({"max_s": 0}, "curve.max_s"),
    ({"max_s": -5}, "curve.max_s"),
    ({"max_s": 1e300}, "curve.max_s"),
    ({"max_s": "600"}, "curve.max_s"),
    ({"max_s": None}, "curve.max_s"),
    ({"max_s": {"a": 1}}, "curve.max_s"),
    ({"max_s": False}, "curve.max_s"),
    ({"points": 10, "step": 1}, "curve.step"),
    ({"x" * 5000: 1}, "curve." + "x" * 40),
]


@pytest.mark.parametrize("curve,field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_garbage_curves_are_422_naming_the_field(
    client: AppClient, repository: ModelRepository, curve: Any, field: str
) -> None:
    r = client.post("/v1/predict", json={"features": features(repository, 2), "curve": curve})
    assert r.status_code == 422, r.text
    doc = r.json()
    assert doc["field"] == field and doc["code"] == "invalid_input", doc
    assert len(r.content) < 400  # the message never echoes a huge value


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_max_s_is_refused(
    client: AppClient, repository: ModelRepository, literal: bytes
) -> None:
    rows = orjson.dumps(features(repository, 2))
    body = b'{"features": ' + rows + b', "curve": {"max_s": ' + literal + b"}}"
    r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] in ("body", "curve.max_s")


def test_rows_times_points_over_the_limit_is_413(
    client: AppClient, repository: ModelRepository
) -> None:
    rows = features(repository, 100)
    fits = client.post("/v1/predict", json={"features": rows, "curve": {"points": 200}})
    assert fits.status_code == 200  # 100 x 200 = the limit exactly
    over = client.post("/v1/predict", json={"features": rows, "curve": {"points": 201}})
    assert over.status_code == 413, over.text
    doc = over.json()
    assert doc["code"] == "too_large" and doc["field"] == "curve"
    assert "20100" in doc["error"] and str(MAX_VALUES) in doc["error"]
    # the same rows without a curve are fine
    assert client.post("/v1/predict", json={"features": rows}).status_code == 200


def test_cost_of_a_maximal_curve_request(repository: ModelRepository) -> None:
    """The default limit, 200,000 values, spent on the costliest family (EGM): timed, and
    its memory peak measured (numpy reports its buffers to tracemalloc)."""
    limit = 200_000
    points = MAX_CURVE_POINTS
    n = limit // points
    rows = features(repository, n)
    costs = []
    for client in app_client(repository):  # the default settings
        body = orjson.dumps({"features": rows, "curve": {"points": points, "max_s": 600}})
        client.post("/v1/predict", content=body)  # warm
        for name in ("egmn", "softmax", "ziln"):
            tracemalloc.start()
            started = time.perf_counter()
            r = client.post(f"/v1/models/{name}/predict", content=body)
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert r.status_code == 200, r.text
            costs.append((name, elapsed, peak, len(r.content)))
        more = features(repository, n + 1)
        big = orjson.dumps({"features": more, "curve": {"points": points}})
        assert client.post("/v1/predict", content=big).status_code == 413
    for name, elapsed, peak, size in costs:
        print(
            f"\nmaximal curve ({n} rows x {points} points = {n * points} values), {name}: "
            f"{elapsed * 1000:.0f} ms, peak {peak / 2**20:.0f} MiB traced, "
            f"answer {size / 2**20:.1f} MiB"
        )
        assert elapsed < 10.0 and peak < 512 * 2**20


def test_the_inspectors_rows_serve_every_model(client: AppClient, models: list[str]) -> None:
    doc = client.get("/v1/inspect/rows").json()
    assert doc["license"] == "CC BY-SA 4.0" and len(doc["rows"]) == 50
    for name in models:
        r = client.post(
            f"/v1/models/{name}/predict",
            json={"instances": doc["rows"], "curve": {"points": 100, "max_s": 60}},
        )
        assert r.status_code == 200, (name, r.text)
        assert r.json()["n"] == 50
