"""The pages in a real browser: headless Chromium against uvicorn on the loopback, with every
request that would leave the machine aborted and recorded (tests.support.browser).

- ``/docs`` (Swagger UI) and ``/redoc`` render from the service's own files: the rendered DOM
  lists every route of ``/openapi.json`` with its examples, and "Try it out" -> "Execute" on
  the native predict example is answered 200 in the browser.
- ``/inspect`` draws a real test-day row: the plotted points (read back from the SVG's path
  geometry and data attributes) are the API's numbers, for a smooth and a bucket family, a
  picked row, a comparison and a pasted row; with API keys it asks for a token.

Screenshots are kept under ``artifacts/`` (git-ignored); ``docs/img/`` holds copies for the
README.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.config import Settings
from service.runtime.repository import ModelRepository
from tests.support import MODELS
from tests.support.api import LiveServer
from tests.support.browser import Traffic, browser_page, screenshot, timed

KEY = "page-test-key_0123456789"


@pytest.fixture(scope="module")
def guarded(repository: ModelRepository) -> Iterator[LiveServer]:
    settings = Settings(model_repository=MODELS, api_keys=KEY)  # type: ignore[arg-type]
    server = LiveServer(create_app(settings, repository, handle_signals=False))
    yield server
    server.stop()


def base(server: LiveServer) -> str:
    return f"http://{server.address}"


def assert_stayed_home(traffic: Traffic) -> None:
    assert traffic.requested, "the page loaded nothing?"
    assert traffic.outside == [], f"requests to other hosts: {traffic.outside}"
    assert traffic.refused == [], f"requests the page's CSP refused: {traffic.refused}"


# ----------------------------------------------------------------------------- /docs, /redoc


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }


def test_docs_render_every_route_and_try_it_out_works(live: LiveServer) -> None:
    doc = httpx.get(base(live) + "/openapi.json").json()
    operations = _operations(doc)
    with browser_page() as (page, traffic):
        load_s = timed(
            lambda: (page.goto(base(live) + "/docs"), page.wait_for_selector(".opblock"))
        )
        blocks = page.locator(".opblock")
        shown = set()
        for i in range(blocks.count()):
            block = blocks.nth(i)
            method = block.locator(".opblock-summary-method").inner_text().strip()
            path = block.locator(".opblock-summary-path").get_attribute("data-path")
            shown.add((method, path))
        assert shown == set(operations), set(operations) ^ shown
        screenshot(page, "docs.png")

        # every request body's examples, as Swagger UI lists them once a route is opened
        for (method, path), op in operations.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if "examples" not in content:
                continue
            block = page.locator(f".opblock:has(.opblock-summary-path[data-path='{path}'])")
            block = block.filter(has=page.locator(f".opblock-summary-method:text-is('{method}')"))
            block.locator(".opblock-summary").first.click()
            options = block.locator(".examples-select select option")
            options.first.wait_for(state="attached")
            want = [e.get("summary", name) for name, e in content["examples"].items()]
            assert options.all_inner_texts() == want, path
            block.locator(".opblock-summary").first.click()

        # Try it out -> Execute on the native predict example
        op_id = operations[("POST", "/v1/models/{name}/predict")]["operationId"]
        block = page.locator(f"#operations-predict-{op_id}")
        block.locator(".opblock-summary").click()
        block.locator("button.try-out__btn").click()
        block.locator("input[placeholder='name']").fill("egmn")
        block.locator("button.execute").click()
        status = block.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for()
        assert status.inner_text().strip() == "200"
        answer = block.locator(".live-responses-table tbody .response-col_description pre").first
        assert '"expected_watch_time_s"' in answer.inner_text()
        screenshot(page, "docs-try-it-out.png")
        assert traffic.errors == [], traffic.errors
        assert_stayed_home(traffic)
    print(f"\n/docs rendered {len(shown)} routes in {load_s * 1000:.0f} ms")


def test_redoc_renders_every_route(live: LiveServer) -> None:
    doc = httpx.get(base(live) + "/openapi.json").json()
    summaries = {op["summary"] for op in _operations(doc).values()}
    with browser_page() as (page, traffic):
        load_s = timed(
            lambda: (
                page.goto(base(live) + "/redoc"),
                page.wait_for_selector("h2:has-text('Predict with a model')"),
            )
        )
        headings = set(page.locator("h2").all_inner_texts())
        assert summaries <= headings, summaries - headings
        screenshot(page, "redoc.png")
        assert_stayed_home(traffic)
    print(f"\n/redoc rendered {len(summaries)} routes in {load_s * 1000:.0f} ms")


# ----------------------------------------------------------------------------- /inspect

_COMMAND = re.compile(r"([MLHV])([^MLHV]+)")


def path_points(d: str) -> np.ndarray:
    """The vertices an SVG path of M/L/H/V commands passes through where a value is drawn:
    after M, L and V (a step's H only carries the value to the next time)."""
    points = []
    x = y = 0.0
    for command, args in _COMMAND.findall(d):
        values = [float(v) for v in args.replace(",", " ").split()]
        if command in "ML":
            x, y = values
            points.append((x, y))
        elif command == "H":
            x = values[0]
        else:
            y = values[0]
            points.append((x, y))
    return np.array(points)


def check_drawn(page: Any, server: LiveServer) -> dict[str, Any]:
    """Every series the page drew, compared with the API's answer to the same request."""
    drawn = page.evaluate("window.inspector.drawn")
    for series in drawn["series"]:
        name = series["model"]
        api = httpx.post(
            base(server) + f"/v1/models/{name}/predict", json=series["request"], timeout=30
        ).json()
        curve = api["curve"]
        # the page shows the API's answer ...
        for which in ("pdf", "cdf"):
            np.testing.assert_allclose(
                series["answer"]["curve"][which], curve[which], rtol=1e-12, err_msg=name
            )
        for which in ("pdf", "cdf"):
            svg = page.locator(f"#{which}-plot")
            path = svg.locator(f"path.series[data-model='{name}']")
            # ... its data attributes are the API's numbers exactly ...
            t = np.array(path.get_attribute("data-t").split(","), dtype=float)
            y = np.array(path.get_attribute("data-y").split(","), dtype=float)
            np.testing.assert_array_equal(t, curve["t_s"])
            np.testing.assert_array_equal(y, curve[which][0], err_msg=f"{name} {which}")
            # ... and the drawn geometry, mapped back through the plot's axes, too
            s = {k: float(svg.get_attribute(f"data-{k}")) for k in
                 ("t0", "t1", "px0", "px1", "v0", "v1", "py0", "py1")}  # fmt: skip
            px = path_points(path.get_attribute("d"))
            assert px.shape == (len(curve["t_s"]), 2), (which, px.shape)
            t_back = s["t0"] + (px[:, 0] - s["px0"]) / (s["px1"] - s["px0"]) * (s["t1"] - s["t0"])
            v_back = s["v0"] + (s["py0"] - px[:, 1]) / (s["py0"] - s["py1"]) * (s["v1"] - s["v0"])
            half_px_t = 0.001 / (s["px1"] - s["px0"]) * (s["t1"] - s["t0"])
            half_px_v = 0.001 / (s["py0"] - s["py1"]) * (s["v1"] - s["v0"])
            np.testing.assert_allclose(t_back, curve["t_s"], rtol=0, atol=half_px_t)
            np.testing.assert_allclose(v_back, curve[which][0], rtol=0, atol=half_px_v)
            kind = path.get_attribute("data-density")
            assert kind == (curve["density"] if which == "pdf" else "cdf")
        # the marked numbers: mean, point_s, quantiles, quick-skip mass, atoms
        marks = page.locator(f"#cdf-plot [data-model='{name}'][data-marker]")
        values = {
            marks.nth(i).get_attribute("data-marker"): float(
                marks.nth(i).get_attribute("data-value")
            )
            for i in range(marks.count())
        }
        assert values["mean"] == api["expected_watch_time_s"][0]
        assert values["point_s"] == api["point_s"][0]
        for level, value in zip(
            api["quantiles"]["levels"], api["quantiles"]["values_s"][0], strict=True
        ):
            assert values[f"q{level}"] == value
        skip = page.locator(f"#pdf-plot [data-model='{name}'][data-marker='quick_skip_prob']")
        assert float(skip.get_attribute("data-value")) == api["quick_skip_prob"][0]
        atoms = page.locator(f"#pdf-plot g.atom[data-model='{name}']")
        held = [m for m in curve["atoms"]["mass"][0] if m > 0]
        assert atoms.count() == len(held)
    return drawn


def wait_drawn(page: Any, count: int) -> None:
    """Until the page has drawn ``count`` times or more and has nothing left to draw."""
    page.wait_for_function(
        f"() => Number(document.body.dataset.drawn) >= {count} && "
        "!window.inspector.busy && !window.inspector.again",
        timeout=60_000,
    )
    error = page.evaluate("document.body.dataset.error || ''")
    assert not error, error


def test_inspector_draws_the_apis_numbers(live: LiveServer) -> None:
    with browser_page(1200, 900) as (page, traffic):
        load_s = timed(lambda: (page.goto(base(live) + "/inspect"), wait_drawn(page, 1)))
        drawn = check_drawn(page, live)
        assert [s["model"] for s in drawn["series"]] == ["egmn"]
        rows = httpx.get(base(live) + "/v1/inspect/rows").json()
        assert drawn["row"] == rows["rows"][0] and drawn["observed"] == rows["watch_time_s"][0]
        labels = page.locator("#row option").all_inner_texts()
        assert len(labels) == len(rows["rows"]) == 50

        # another row, then a bucket family beside the default model
        page.select_option("#row", "7")
        wait_drawn(page, 2)
        assert page.evaluate("window.inspector.drawn.row") == rows["rows"][7]
        check_drawn(page, live)
        page.select_option("#model-b", "d2q")
        wait_drawn(page, 3)
        drawn = check_drawn(page, live)
        assert [s["answer"]["curve"]["density"] for s in drawn["series"]] == ["point", "step"]
        screenshot(page, "inspect.png", full_page=True)

        # a fixed range and a pasted row (a request body: its first row is drawn)
        page.fill("#max-s", "60")
        page.dispatch_event("#max-s", "change")
        wait_drawn(page, 4)
        assert page.evaluate("window.inspector.drawn.maxS") == 60
        pasted = {"instances": [rows["rows"][12]], "quantiles": [0.5]}
        page.click("#paste-box summary")
        page.fill("#paste", httpx.Response(200, json=pasted).text)
        page.click("#use-paste")
        wait_drawn(page, 5)
        drawn = check_drawn(page, live)
        assert drawn["row"] == rows["rows"][12] and drawn["observed"] is None
        assert traffic.errors == [], traffic.errors
        assert_stayed_home(traffic)
    print(f"\n/inspect loaded and drew its first row in {load_s * 1000:.0f} ms")


def test_inspector_asks_for_the_token_when_keys_are_set(guarded: LiveServer) -> None:
    assert httpx.get(base(guarded) + "/inspect").status_code == 200  # the page is open
    assert httpx.get(base(guarded) + "/v1/inspect/rows").status_code == 401  # its data is not
    with browser_page() as (page, traffic):
        page.goto(base(guarded) + "/inspect")
        page.wait_for_selector("body[data-error]")
        assert "401" in page.inner_text("#status")
        page.click("#token-box summary")
        page.fill("#token", KEY)
        page.dispatch_event("#token", "change")
        wait_drawn(page, 1)
        check_drawn_with = page.evaluate("window.inspector.drawn.series[0].answer.n")
        assert check_drawn_with == 1
        assert_stayed_home(traffic)
