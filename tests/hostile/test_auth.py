"""Bearer-token access control (WATCHTIME_API_KEYS) on a real process: 401 without a valid
token on the API (the curve option, /openapi.json, /docs, /redoc and the inspector's rows
included), the probes open, /metrics open unless WATCHTIME_METRICS_AUTH, and the files every
deployment serves alike (the /inspect page, /static/ assets) open."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

from tests.support import ROOT
from tests.support.hostile import ServiceProcess, predict_body, request, v2_inputs

KEYS = ("k3y-one_0123456789abcdef", "second.key~0123456789+/==")
PROBES = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServiceProcess]:
    svc = ServiceProcess(env={"WATCHTIME_API_KEYS": ",".join(KEYS)}, grpc=True)
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


def _calls() -> list[tuple[str, str, bytes | None]]:
    curve = orjson.loads(predict_body(2))
    curve_body = orjson.dumps({**curve, "curve": {"points": 50, "max_s": 60}})
    return [
        ("POST", "/v1/predict", predict_body(2)),
        ("POST", "/v1/models/egmn/predict", predict_body(2)),
        ("POST", "/v2/models/egmn/infer", orjson.dumps({"inputs": v2_inputs(2)})),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/egmn", None),
        ("GET", "/v2/models/egmn", None),
        ("GET", "/v2", None),
        ("GET", "/openapi.json", None),
        ("GET", "/docs", None),
        ("GET", "/redoc", None),
        ("GET", "/v1/inspect/rows", None),
        ("POST", "/v1/predict", curve_body),
    ]


OPEN_FILES = (
    "/inspect",
    "/static/inspect/inspect.js",
    "/static/inspect/inspect.css",
    "/static/docs/swagger-ui-bundle.js",
    "/static/docs/redoc.standalone.js",
)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        f"Basic {KEYS[0]}",
        f"Bearer {KEYS[0]}x",
        f"Bearer {KEYS[0][:-1]}",
        "Bearer",
    ],
)
def test_api_refuses_without_a_valid_token(
    guarded: ServiceProcess, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    for method, path, body in _calls():
        status, answer_headers, answer = request(guarded.port, method, path, body, headers)
        assert status == 401, (path, status, answer)
        challenge = answer_headers["www-authenticate"]
        assert challenge.startswith("Bearer realm=")
        given = (
            authorization is not None
            and authorization.startswith("Bearer ")
            and len(authorization) > 7
        )
        assert ('error="invalid_token"' in challenge) == given, challenge
        assert b"swagger" not in answer.lower() and b"redoc" not in answer.lower()
        doc = orjson.loads(answer)
        assert "bearer token" in doc["error"]
        assert set(doc) == (
            {"error"} if path.startswith("/v2") else {"error", "code", "field", "row"}
        )
        assert KEYS[0].encode() not in answer and KEYS[1].encode() not in answer


@pytest.mark.parametrize("key", KEYS)
def test_api_serves_with_either_key(guarded: ServiceProcess, key: str) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"bearer {key}"}
    for method, path, body in _calls():
        status, _, answer = request(guarded.port, method, path, body, headers)
        assert status == 200, (path, answer[:200])


def test_probes_and_metrics_stay_open(guarded: ServiceProcess) -> None:
    for path in (*PROBES, "/metrics"):
        status, _, _ = request(guarded.port, "GET", path)
        assert status == 200, path
    # a variant of an open path is not open
    for path in ("/healthz/", "/metrics/", "//healthz", "/inspect/", "/Inspect", "//static/docs"):
        status, _, _ = request(guarded.port, "GET", path)
        assert status == 401, path


def test_page_files_are_open_and_lead_nowhere_else(guarded: ServiceProcess) -> None:
    for path in OPEN_FILES:
        status, headers, body = request(guarded.port, "GET", path)
        assert status == 200 and body, path
        assert "www-authenticate" not in headers
    status, headers, _ = request(guarded.port, "GET", "/inspect")
    assert "connect-src 'self'" in headers["content-security-policy"]
    # an open prefix does not reach what it is not: traversal and unknown files are 404s
    for path in (
        "/static/../openapi.json",
        "/static/docs/../../openapi.json",
        "/static/inspect/%2e%2e/test_day_rows.json",
        "/static/inspect/../test_day_rows.json",
        "/static/v1/inspect/rows",
        "/static/",
    ):
        status, _, body = request(guarded.port, "GET", path)
        assert status == 404, (path, status, body[:200])
        assert b"openapi" not in body and b"KuaiRand" not in body


def test_metrics_auth_protects_metrics() -> None:
    svc = ServiceProcess(env={"WATCHTIME_API_KEYS": KEYS[0], "WATCHTIME_METRICS_AUTH": "true"})
    try:
        svc.wait_ready()
        status, headers, _ = request(svc.port, "GET", "/metrics")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        status, _, body = request(
            svc.port, "GET", "/metrics", headers={"Authorization": f"Bearer {KEYS[0]}"}
        )
        assert status == 200 and b"watchtime_requests_total" in body
        for path in PROBES:
            assert request(svc.port, "GET", path)[0] == 200
    finally:
        svc.stop()


def test_without_keys_nothing_asks_for_a_token(service: ServiceProcess) -> None:
    for method, path, body in _calls():
        status, headers, _ = request(
            service.port, method, path, body, {"Content-Type": "application/json"}
        )
        assert status == 200 and "www-authenticate" not in headers, path


def test_a_malformed_key_is_a_configuration_error() -> None:
    secret = "has space-in-it"
    done = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "WATCHTIME_API_KEYS": f"good-key,{secret}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "WATCHTIME_API_KEYS" in done.stderr and secret not in done.stderr


def test_grpc_needs_a_token_but_on_the_probes(guarded: ServiceProcess) -> None:
    import grpc

    from tests.support.grpc import OUTPUTS, Client, pb, request
    from tests.support.v2 import tensor_columns

    client = Client(guarded.grpc_port)
    try:
        message = request(tensor_columns(2), outputs=OUTPUTS)
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", KEYS[0]),)):
            exc = client.error(message, metadata=metadata)
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc.details()
            assert "bearer token" in exc.details() and KEYS[0] not in exc.details()
        with pytest.raises(grpc.RpcError) as info:
            client.stub.ModelMetadata(pb.ModelMetadataRequest(name="egmn"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for key in KEYS:
            answer = client.infer(message, metadata=(("authorization", f"Bearer {key}"),))
            assert len(answer.outputs) == len(OUTPUTS)
        # the probes, as on HTTP: the health service, ServerLive and ServerReady
        assert client.health() == 1
        assert client.stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
        assert client.stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    finally:
        client.close()
