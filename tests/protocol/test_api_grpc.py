"""The Open Inference Protocol over gRPC, against a real ``python -m service`` on loopback:
Triton's gRPC client and hand-written messages (raw and typed contents) on test-day rows,
answers identical to the native route's; the health service; one test per error rule."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.support.api import EGMN_VERSIONS, manifest
from tests.support.grpc import OUTPUTS, Client, outputs_of, pb, request
from tests.support.hostile import ServiceProcess, metric_value
from tests.support.v2 import datatype, native_answer, tensor_columns

PARAMETERS = {
    "quantiles": "0.1,0.5,0.9",
    "intervals": "[[0,3],[3,10],[10,null]]",
    "quick_skip_threshold_s": "4",
}
ALL_OUTPUTS = [*OUTPUTS, "quantiles", "interval_mass"]
MAX_ROWS = 300


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    svc = ServiceProcess(grpc=True, env={"WATCHTIME_MAX_REQUEST_ROWS": str(MAX_ROWS)})
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[Client]:
    c = Client(service.grpc_port)
    yield c
    c.close()


def assert_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# ----------------------------------------------------------------------------- clients


def test_triton_grpc_client(service: ServiceProcess) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{service.grpc_port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("egmn") and client.is_model_ready("egmn", "1")
        assert client.get_server_metadata().name == "watchtime"
        meta = client.get_model_metadata("egmn")
        assert list(meta.versions) == EGMN_VERSIONS
        assert [i.name for i in meta.inputs] == manifest().source_columns()
        assert [o.name for o in meta.outputs][:4] == OUTPUTS

        columns = tensor_columns(64, start=300)
        inputs = []
        for name, values in columns.items():
            tensor = triton.InferInput(name, [len(values)], datatype(values))
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
        # a float parameter travels as Triton's double_param
        parameters = {**PARAMETERS, "quick_skip_threshold_s": 4.0}
        outputs = [triton.InferRequestedOutput(name) for name in ALL_OUTPUTS]
        result = client.infer(
            "egmn", inputs, outputs=outputs, parameters=parameters, request_id="r1"
        )
        got = {name: result.as_numpy(name) for name in ALL_OUTPUTS}
        assert_identical(got, native_answer(service.port, 64, 300))
        response = result.get_response()
        assert response.id == "r1" and response.model_version == EGMN_VERSIONS[-1]
        assert response.parameters["quick_skip_threshold_s"].string_param == "4.0"

        with pytest.raises(InferenceServerException) as info:
            client.infer("egmn", inputs[1:])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert f"input {inputs[0].name()!r} is missing" in info.value.message()
    finally:
        client.close()


@pytest.mark.parametrize("raw", [True, False], ids=["raw_contents", "typed_contents"])
def test_hand_written_messages_match_the_native_route(
    service: ServiceProcess, client: Client, raw: bool
) -> None:
    columns = tensor_columns(40, start=1000)
    response = client.infer(request(columns, raw=raw, parameters=PARAMETERS))
    assert bool(response.raw_output_contents) == raw  # answered in the request's form
    assert [o.name for o in response.outputs] == ALL_OUTPUTS
    assert_identical(outputs_of(response), native_answer(service.port, 40, 1000))


def test_missing_numbers_and_versions(client: Client) -> None:
    columns = tensor_columns(8, start=50)
    columns["duration_ms"][3] = np.nan  # NaN marks a missing number, as on HTTP
    old = request(columns, outputs=OUTPUTS)
    old.model_version = EGMN_VERSIONS[0]
    response = client.infer(old)
    assert response.model_version == EGMN_VERSIONS[0]
    assert np.isfinite(outputs_of(response)["expected_watch_time_s"]).all()


def test_health_service_serves(client: Client) -> None:
    assert client.health("") == 1
    assert client.health("inference.GRPCInferenceService") == 1


# ----------------------------------------------------------------------------- error rules


def _code(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code()  # type: ignore[no-any-return, attr-defined]


def _details(exc: grpc.RpcError) -> str:
    return str(exc.details())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        # tab (the fifth input) is a request-time column: no table fills it
        (
            lambda m: (m.inputs.__delitem__(4), m.raw_input_contents.__delitem__(4)),
            ["input 'tab' is missing"],
        ),
        (lambda m: setattr(m.inputs[0], "datatype", "FP128"), ["unsupported datatype 'FP128'"]),
        (lambda m: m.inputs[0].shape.append(2), ["shape must be [n] or [n, 1]"]),
        (lambda m: m.raw_input_contents.pop(), ["raw_input_contents holds"]),
        (lambda m: m.parameters["quantiles"].MergeFrom(_text("0.5,1.5")), ["quantiles"]),
        (lambda m: m.parameters["intervals"].MergeFrom(_text("[[3,1]]")), ["intervals"]),
        (lambda m: m.outputs.add(name="nope"), ["unknown output 'nope'"]),
    ],
    ids=["missing", "datatype", "shape", "raw_count", "quantile", "interval", "output"],
)
def test_invalid_input_is_invalid_argument(client: Client, mutate: Any, words: list[str]) -> None:
    message = request(tensor_columns(4, start=10))
    mutate(message)
    exc = client.error(message)
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT, _details(exc)
    for word in words:
        assert word in _details(exc)


def _text(value: str) -> Any:
    return pb.InferParameter(string_param=value)


def test_a_wrong_element_is_named(client: Client) -> None:
    message = request(tensor_columns(6, start=10), raw=False)
    text = next(t for t in message.inputs if t.datatype == "BYTES")
    text.contents.bytes_contents[2] = b"\xff\xfe"
    exc = client.error(message)
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(exc) == f"input {text.name!r}: element 2 is not UTF-8 text"


def test_unknown_model_or_version_is_not_found(client: Client) -> None:
    columns = tensor_columns(2)
    exc = client.error(request(columns, model="nope"))
    assert _code(exc) == grpc.StatusCode.NOT_FOUND
    assert "model 'nope' is not served" in _details(exc)
    message = request(columns)
    message.model_version = "99"
    exc = client.error(message)
    assert _code(exc) == grpc.StatusCode.NOT_FOUND and "version '99'" in _details(exc)
    for call in (client.stub.ModelMetadata, client.stub.ModelReady):
        with pytest.raises(grpc.RpcError) as info:
            call(pb.ModelMetadataRequest(name="nope"), timeout=5)
        assert _code(info.value) == grpc.StatusCode.NOT_FOUND


def test_over_the_row_limit_is_invalid_argument(client: Client) -> None:
    exc = client.error(request(tensor_columns(MAX_ROWS + 1)))
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{MAX_ROWS + 1} rows exceed the limit of {MAX_ROWS} per request" in _details(exc)


def test_metrics_count_grpc_requests(service: ServiceProcess, client: Client) -> None:
    before = metric_value(service.port, "watchtime_requests_total", endpoint="grpc", status="200")
    client.infer(request(tensor_columns(3), outputs=OUTPUTS))
    after = metric_value(service.port, "watchtime_requests_total", endpoint="grpc", status="200")
    assert after == before + 1
    client.error(request(tensor_columns(2), model="nope"))
    assert (
        metric_value(
            service.port, "watchtime_requests_total", endpoint="grpc", status="404", model="unknown"
        )
        >= 1
    )


# ----------------------------------------------------------------------------- queue, deadline


@pytest.fixture(scope="module")
def slow_queue() -> Iterator[ServiceProcess]:
    """A server whose queue holds 100 rows and waits 600 ms for more rows to batch with."""
    svc = ServiceProcess(
        grpc=True,
        env={"WATCHTIME_MAX_QUEUE_ROWS": "100", "WATCHTIME_MAX_QUEUE_DELAY_MS": "600"},
    )
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


def _in_background(
    client: Client, message: Any, **kwargs: Any
) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(client.infer(message, **kwargs))
        except grpc.RpcError as exc:
            box.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_full_queue_is_resource_exhausted(slow_queue: ServiceProcess) -> None:
    client = Client(slow_queue.grpc_port)
    try:
        first, box = _in_background(client, request(tensor_columns(80), outputs=OUTPUTS))
        time.sleep(0.2)  # the 80 rows wait in the queue for 600 ms
        exc = client.error(request(tensor_columns(80), outputs=OUTPUTS))
        first.join(timeout=30)
        assert _code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED, _details(exc)
        assert "queue is full" in _details(exc)
        assert dict(exc.trailing_metadata())["retry-after"].isdigit()  # type: ignore[attr-defined]
        assert not isinstance(box[0], grpc.RpcError), box
    finally:
        client.close()


def test_deadline_in_the_queue_is_deadline_exceeded(slow_queue: ServiceProcess) -> None:
    client = Client(slow_queue.grpc_port)
    try:
        # the timeout parameter (microseconds): the server's own refusal
        exc = client.error(request(tensor_columns(2), parameters={"timeout": 100_000}))
        assert _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "deadline passed while it was queued" in _details(exc)
        # the gRPC deadline is the request's deadline too
        before = metric_value(
            slow_queue.port, "watchtime_requests_total", endpoint="grpc", status="504"
        )
        exc = client.error(request(tensor_columns(2)), timeout=0.15)
        assert _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.3)
        after = metric_value(
            slow_queue.port, "watchtime_requests_total", endpoint="grpc", status="504"
        )
        assert after == before + 1
        assert metric_value(slow_queue.port, "watchtime_queue_rows") == 0
    finally:
        client.close()


def test_shutdown_drains_and_refuses_new_rpcs_as_unavailable(slow_queue: ServiceProcess) -> None:
    client = Client(slow_queue.grpc_port)
    try:
        assert client.health() == 1
        first, box = _in_background(client, request(tensor_columns(5), outputs=OUTPUTS))
        time.sleep(0.2)  # queued for 600 ms
        slow_queue.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        late = Client(slow_queue.grpc_port)
        try:
            exc = late.error(request(tensor_columns(2)), timeout=5)
        finally:
            late.close()
        first.join(timeout=30)
        assert _code(exc) == grpc.StatusCode.UNAVAILABLE, _details(exc)
        assert not isinstance(box[0], grpc.RpcError), box  # the one in flight was answered
        # uvicorn re-raises the signal after its graceful shutdown
        assert slow_queue.proc.wait(timeout=40) in (0, -signal.SIGTERM)
    finally:
        client.close()
