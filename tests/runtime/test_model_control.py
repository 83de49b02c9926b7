"""The repository extension and the model control modes, through the app (ASGI client).

``none``: everything loaded at start-up, load and unload refused. ``explicit``: the models of
WATCHTIME_LOAD_MODELS at start-up, then load and unload by request. ``poll``: the repository
scanned again (here by calling one poll, so the tests do not wait for a timer). A version
that fails its checks is refused, counted, and the version before it keeps serving; a
version taken away while its requests run lets them finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import Settings, load_settings
from service.controlplane import ControlPlane
from service.errors import ConfigError, ModelLoadError
from tests.support.api import AppClient, LiveServer, client_for, request_rows
from tests.support.metrics import scrape, value
from tests.support.reload import (
    add_version,
    break_version,
    copy_repository,
    publish,
    retract,
    stage_version,
)

COLUMNS, _ = request_rows(4)
BODY = {"features": COLUMNS}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_repository(tmp_path / "models", ["egmn/1", "egmn/2", "vr/1"])


def _client(root: Path, **knobs: Any) -> Iterator[AppClient]:
    settings = Settings(
        model_repository=root, intra_op_threads=1, warmup_rows=2, grpc_port=0, **knobs
    )
    yield from client_for(create_app(settings, handle_signals=False))


serving = contextmanager(_client)


def _predict(client: AppClient, name: str) -> httpx.Response:
    return client.post(f"/v1/models/{name}/predict", json=BODY)


def _served_version(client: AppClient, name: str) -> str:
    r = _predict(client, name)
    assert r.status_code == 200, r.text
    return str(r.json()["version"])


def _index(client: AppClient) -> dict[str, tuple[str, str]]:
    r = client.post("/v2/repository/index")
    assert r.status_code == 200, r.text
    return {f"{e['name']}/{e['version']}": (e["state"], e["reason"]) for e in r.json()}


def _control(client: AppClient) -> ControlPlane:
    plane = client.app.state.control_plane
    assert isinstance(plane, ControlPlane)
    return plane


# --------------------------------------------------------------------------- none


@pytest.fixture
def none_client(root: Path) -> Iterator[AppClient]:
    yield from _client(root)


def test_index_lists_every_version_ready(none_client: AppClient) -> None:
    ready = {"egmn/1": ("READY", ""), "egmn/2": ("READY", ""), "vr/1": ("READY", "")}
    assert _index(none_client) == ready
    for call in (
        none_client.get("/v2/repository/index"),
        none_client.get("/v2/repository/index", params={"ready": "true"}),
        none_client.post("/v2/repository/index", json={}),
        none_client.post("/v2/repository/index", json={"ready": True}),
    ):
        assert call.status_code == 200, call.text
        assert {f"{e['name']}/{e['version']}" for e in call.json()} == set(ready)
        assert all(set(e) == {"name", "version", "state", "reason"} for e in call.json())
    assert "model_repository" in none_client.get("/v2").json()["extensions"]


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"[1]", "body"), (b'{"ready": "yes"}', "ready"), (b"{nope", "JSON")],
)
def test_index_refuses_a_bad_body(none_client: AppClient, body: bytes, field: str) -> None:
    r = none_client.post("/v2/repository/index", content=body)
    assert r.status_code == 400
    assert set(r.json()) == {"error"} and field in r.json()["error"]


@pytest.mark.parametrize("action", ["load", "unload"])
def test_none_mode_refuses_load_and_unload(none_client: AppClient, action: str) -> None:
    r = none_client.post(f"/v2/repository/models/egmn/{action}")
    assert r.status_code == 400
    message = r.json()["error"]
    assert "WATCHTIME_MODEL_CONTROL is 'none'" in message and "explicit" in message
    assert _served_version(none_client, "egmn") == "2"


# --------------------------------------------------------------------------- explicit


@pytest.fixture
def explicit_client(root: Path) -> Iterator[AppClient]:
    yield from _client(root, model_control="explicit", load_models="egmn")


def test_explicit_loads_the_listed_models_then_by_request(
    explicit_client: AppClient, root: Path
) -> None:
    client = explicit_client
    assert _index(client) == {
        "egmn/1": ("READY", ""),
        "egmn/2": ("READY", ""),
        "vr/1": ("UNAVAILABLE", "not loaded"),
    }
    ready_only = client.post("/v2/repository/index", json={"ready": True}).json()
    assert {e["name"] for e in ready_only} == {"egmn"}
    assert _predict(client, "vr").status_code == 404

    r = client.post("/v2/repository/models/vr/load")
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "vr", "load": True, "versions": ["1"]}
    assert _served_version(client, "vr") == "1"
    assert client.get("/v2/models/vr/ready").status_code == 200

    # Triton's client sends this body with an unload
    r = client.post(
        "/v2/repository/models/vr/unload", json={"parameters": {"unload_dependents": False}}
    )
    assert r.status_code == 200 and r.json() == {"name": "vr", "unload": True}
    assert _predict(client, "vr").status_code == 404
    assert client.get("/v2/models/vr").status_code == 404
    assert _index(client)["vr/1"] == ("UNAVAILABLE", "unloaded")
    assert client.post("/v2/repository/models/vr/unload").status_code == 200  # idempotent

    # a new version: loaded by a load request on its model, and served by the bare name
    add_version(root, "egmn", "2", "3")
    assert _served_version(client, "egmn") == "2"  # nothing changes without a request
    r = client.post("/v2/repository/models/egmn/load")
    assert r.status_code == 200 and r.json()["versions"] == ["1", "2", "3"]
    assert _served_version(client, "egmn") == "3"
    assert client.get("/v1/models/egmn").json()["versions"] == ["1", "2", "3"]
    # a version directory taken away: the next load of the model unloads it
    retract(root / "egmn" / "3")
    assert client.post("/v2/repository/models/egmn/load").json()["versions"] == ["1", "2"]
    assert _served_version(client, "egmn") == "2"


@pytest.mark.parametrize("action", ["load", "unload"])
def test_explicit_unknown_model_is_404(explicit_client: AppClient, action: str) -> None:
    r = explicit_client.post(f"/v2/repository/models/nope/{action}")
    assert r.status_code == 404
    assert r.json() == {"error": "model 'nope' is not served"}


def test_explicit_load_refuses_a_config_parameter(explicit_client: AppClient) -> None:
    r = explicit_client.post("/v2/repository/models/vr/load", json={"parameters": {"config": "{}"}})
    assert r.status_code == 400 and "parameters.config" in r.json()["error"]


def test_explicit_without_a_list_starts_empty(root: Path) -> None:
    with serving(root, model_control="explicit") as client:
        assert client.get("/readyz").status_code == 200
        assert {state for state, _ in _index(client).values()} == {"UNAVAILABLE"}
        assert client.post("/v2/repository/models/egmn/load").status_code == 200
        assert _served_version(client, "egmn") == "2"
        assert client.post("/v1/predict", json=BODY).status_code == 200


def test_explicit_star_loads_everything(root: Path) -> None:
    with serving(root, model_control="explicit", load_models="*") as client:
        assert {state for state, _ in _index(client).values()} == {"READY"}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"WATCHTIME_LOAD_MODELS": "egmn"}, "applies only with WATCHTIME_MODEL_CONTROL=explicit"),
        (
            {"WATCHTIME_MODEL_CONTROL": "explicit", "WATCHTIME_LOAD_MODELS": "*,vr"},
            "must stand alone",
        ),
        (
            {"WATCHTIME_MODEL_CONTROL": "explicit", "WATCHTIME_WORKERS": "2"},
            "needs WATCHTIME_WORKERS=1",
        ),
        ({"WATCHTIME_MODEL_CONTROL": "sometimes"}, "WATCHTIME_MODEL_CONTROL"),
        ({"WATCHTIME_MODEL_CONTROL": "poll", "WATCHTIME_POLL_S": "0"}, "WATCHTIME_POLL_S"),
    ],
)
def test_control_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, root: Path, env: dict[str, str], says: str
) -> None:
    monkeypatch.setenv("WATCHTIME_MODEL_REPOSITORY", str(root))
    for name, setting in env.items():
        monkeypatch.setenv(name, setting)
    with pytest.raises(ConfigError, match=says):
        load_settings()


def test_explicit_mode_runs_one_worker_by_default(
    monkeypatch: pytest.MonkeyPatch, root: Path
) -> None:
    monkeypatch.setenv("WATCHTIME_MODEL_REPOSITORY", str(root))
    monkeypatch.setenv("WATCHTIME_MODEL_CONTROL", "explicit")
    monkeypatch.delenv("WATCHTIME_WORKERS", raising=False)
    assert load_settings().workers == 1


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("how", ["truncated", "sha256", "onnx", "manifest"])
def test_a_broken_version_is_refused_counted_and_the_old_one_serves(
    explicit_client: AppClient, root: Path, how: str
) -> None:
    client = explicit_client
    before = scrape(client)
    staged = stage_version(root, "egmn", "2", "3")
    break_version(staged, how)
    publish(staged)
    r = client.post("/v2/repository/models/egmn/load")
    assert r.status_code == 400
    assert r.json()["error"].startswith("failed to load egmn/3: ")
    assert _served_version(client, "egmn") == "2"
    assert client.get("/v1/models/egmn").json()["versions"] == ["1", "2"]
    state, reason = _index(client)["egmn/3"]
    assert state == "UNAVAILABLE" and reason and reason in r.json()["error"]
    after = scrape(client)
    labels = {"model": "egmn", "version": "3"}
    failures = value(after, "watchtime_model_load_failures_total", **labels)
    assert (
        failures - before.get(("watchtime_model_load_failures_total", frozenset(labels.items())), 0)
        == 1
    )
    assert value(after, "watchtime_model_refused", **labels) == 1
    assert client.get("/readyz").json()["failed_models"] == [{"model": "egmn", "version": "3"}]

    # mended in place: the next load takes it
    retract(root / "egmn" / "3")
    add_version(root, "egmn", "2", "3")
    assert client.post("/v2/repository/models/egmn/load").status_code == 200
    assert _served_version(client, "egmn") == "3"
    assert value(scrape(client), "watchtime_model_refused", **labels) == 0
    assert "failed_models" not in client.get("/readyz").json()


# --------------------------------------------------------------------------- poll


@pytest.fixture
def poll_client(root: Path) -> Iterator[AppClient]:
    # a poll period no test waits for: the tests run one poll each time they need one
    yield from _client(root, model_control="poll", poll_s=3600)


def _poll(client: AppClient) -> Any:
    return client.loop.run_until_complete(_control(client).poll())


def test_poll_loads_new_versions_retries_half_copies_and_unloads(
    poll_client: AppClient, root: Path
) -> None:
    client = poll_client
    r = client.post("/v2/repository/models/egmn/load")
    assert r.status_code == 400 and "'poll'" in r.json()["error"]
    assert _poll(client).changed is False  # nothing new

    # copied in place, not renamed: a poll sees model.onnx half-written and refuses it
    staged = stage_version(root, "egmn", "2", "3")
    whole = (staged / "model.onnx").read_bytes()
    break_version(staged, "truncated")
    final = publish(staged)
    result = _poll(client)
    assert [f.label for f in result.refused] == ["egmn/3"]
    assert "sha256" in result.refused[0].reason
    assert _served_version(client, "egmn") == "2"
    labels = {"model": "egmn", "version": "3"}
    counted = value(scrape(client), "watchtime_model_load_failures_total", **labels)
    # unchanged since: not tried (nor counted) again
    assert not _poll(client).refused
    assert value(scrape(client), "watchtime_model_load_failures_total", **labels) == counted

    # the copy completes: the next poll loads it
    (final / "model.onnx").write_bytes(whole)
    result = _poll(client)
    assert result.loaded == ["egmn/3"] and not result.refused
    assert result.load_s["egmn/3"] > 0
    assert _served_version(client, "egmn") == "3"
    assert value(scrape(client), "watchtime_model_info", **labels, family="egm") == 1

    # a version removed: unloaded, the one below serves again
    retract(final)
    result = _poll(client)
    assert result.removed == ["egmn/3"]
    assert _served_version(client, "egmn") == "2"
    assert value(scrape(client), "watchtime_model_info", **labels, family="egm") == 0
    assert "egmn/3" not in _index(client)

    # a whole model removed, then back
    retract(root / "vr" / "1")
    _poll(client)
    assert _predict(client, "vr").status_code == 404
    add_version(root, "egmn", "1", "4")  # any source: the manifest is rewritten
    _poll(client)
    assert _served_version(client, "egmn") == "4"


def test_a_repository_that_vanishes_unloads_nothing(poll_client: AppClient, root: Path) -> None:
    root.rename(root.with_name("elsewhere"))
    with pytest.raises(ModelLoadError, match="not a directory"):
        _poll(poll_client)
    assert _served_version(poll_client, "egmn") == "2"
    root.with_name("elsewhere").rename(root)
    assert _poll(poll_client).changed is False


def test_poll_timer_picks_a_new_version_up(root: Path) -> None:
    with serving(root, model_control="poll", poll_s=0.05) as client:
        add_version(root, "egmn", "2", "3")

        async def wait_for_version() -> None:
            for _ in range(400):
                if "3" in client.app.state.data_plane.repository.versions("egmn"):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("egmn/3 not loaded by the poller within 20 s")

        client.loop.run_until_complete(wait_for_version())
        assert _served_version(client, "egmn") == "3"


# --------------------------------------------------------------------------- in flight


def test_requests_in_flight_finish_on_a_version_that_is_unloaded(root: Path) -> None:
    """Requests queued on vr when it is unloaded are answered by it; later ones are 404."""
    knobs: dict[str, Any] = {"max_queue_delay_ms": 300.0, "max_batch_rows": 100_000}
    with serving(root, model_control="explicit", load_models="*", **knobs) as client:
        plane = client.app.state.data_plane
        model = plane.repository.get("vr")

        async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
            calls = [
                asyncio.ensure_future(client.client.post("/v1/models/vr/predict", json=BODY))
                for _ in range(8)
            ]
            for _ in range(200):  # until every request waits in vr's batcher queue
                batcher = plane.batchers.get(model)
                if batcher.queued_rows == 8 * len(COLUMNS["user_id"]):
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("the requests never reached the queue")
            unloaded = await client.client.post("/v2/repository/models/vr/unload")
            answers = list(await asyncio.gather(*calls))
            late = await client.client.post("/v1/models/vr/predict", json=BODY)
            return answers, unloaded, late

        answers, unloaded, late = client.loop.run_until_complete(scenario())
        assert unloaded.status_code == 200, unloaded.text
        assert [a.status_code for a in answers] == [200] * 8
        assert {a.json()["model"] for a in answers} == {"vr"}
        assert late.status_code == 404

        async def settled() -> int:
            for _ in range(100):
                if plane.batchers.retiring == 0:
                    break
                await asyncio.sleep(0.01)
            return plane.batchers.retiring

        assert client.loop.run_until_complete(settled()) == 0


# --------------------------------------------------------------------------- Triton's client


def test_tritons_http_client_indexes_loads_and_unloads(root: Path) -> None:
    from tritonclient.http import InferenceServerClient
    from tritonclient.utils import InferenceServerException

    settings = Settings(
        model_repository=root,
        intra_op_threads=1,
        warmup_rows=2,
        grpc_port=0,
        model_control="explicit",
        load_models="egmn",
    )
    server = LiveServer(create_app(settings, handle_signals=False))
    try:
        client = InferenceServerClient(server.address)
        index = client.get_model_repository_index()
        assert {(e["name"], e["version"], e["state"]) for e in index} == {
            ("egmn", "1", "READY"),
            ("egmn", "2", "READY"),
            ("vr", "1", "UNAVAILABLE"),
        }
        assert not client.is_model_ready("vr")
        client.load_model("vr")
        assert client.is_model_ready("vr")
        client.unload_model("vr")
        assert not client.is_model_ready("vr")
        with pytest.raises(InferenceServerException, match="'nope' is not served"):
            client.load_model("nope")
        assert "model_repository" in client.get_server_metadata()["extensions"]
        client.close()
    finally:
        server.stop()
