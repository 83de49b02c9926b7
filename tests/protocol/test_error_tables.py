"""Every error code has one status per protocol (native, v2, gRPC), and the HTTP protocols agree
but on invalid input."""

from __future__ import annotations

import grpc
import orjson
import pytest

from service import errors
from service.protocol.errors import NATIVE, V2, as_service_error
from service.protocol.grpc.status import GRPC_STATUS, grpc_status, metrics_status

#: raised at start-up only, never answered to a request
START_UP_ONLY = {errors.ModelLoadError, errors.ConfigError}


def _every_subclass(cls: type[errors.ServiceError]) -> set[type[errors.ServiceError]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_every_subclass(sub)}
    return found


REQUEST_ERRORS = sorted(
    _every_subclass(errors.ServiceError) - START_UP_ONLY - {errors.FrameworkError},
    key=lambda c: c.__name__,
)


def test_every_error_class_is_in_the_module_and_has_its_own_code() -> None:
    classes = _every_subclass(errors.ServiceError) - {errors.FeatureError}  # a located InvalidInput
    assert {c.__name__ for c in classes} <= set(errors.__all__)
    codes = [c.code for c in classes if c is not errors.FrameworkError]
    assert len(codes) == len(set(codes)), sorted(codes)


@pytest.mark.parametrize("cls", REQUEST_ERRORS, ids=lambda c: c.__name__)
def test_every_request_error_has_a_status_in_both_tables(cls: type[errors.ServiceError]) -> None:
    assert cls.code in NATIVE.statuses, cls.code
    assert cls.code in V2.statuses, cls.code
    invalid = issubclass(cls, errors.InvalidInput)
    assert (NATIVE.statuses[cls.code], V2.statuses[cls.code]) == (
        (422, 400) if invalid else (NATIVE.statuses[cls.code],) * 2
    )


def test_bodies_follow_each_protocol() -> None:
    err = errors.FeatureError("user_id", "expected a number, got 'x'", 3).in_rows("instances")
    assert orjson.loads(NATIVE.body(err)) == {
        "error": "instances.user_id, row 3: expected a number, got 'x'",
        "code": "invalid_input",
        "field": "instances.user_id",
        "row": 3,
    }
    assert orjson.loads(V2.body(err)) == {
        "error": "instances.user_id, row 3: expected a number, got 'x'"
    }
    assert (NATIVE.status(err), V2.status(err)) == (422, 400)


def test_retry_after_travels_with_the_error() -> None:
    err = errors.QueueFull(120, 100, 2)
    assert err.headers == {"Retry-After": "2"}
    assert NATIVE.status(err) == V2.status(err) == 429


def test_anything_else_is_an_internal_error_or_too_large() -> None:
    assert as_service_error(RuntimeError("boom"), "features").code == "internal"
    assert as_service_error(MemoryError(), "features").code == "too_large"
    rows = errors.FeatureError(None, "the model gives no finite distribution here", 0)
    assert as_service_error(rows, "inputs").field == "inputs"


@pytest.mark.parametrize("cls", REQUEST_ERRORS, ids=lambda c: c.__name__)
def test_every_request_error_has_a_grpc_status(cls: type[errors.ServiceError]) -> None:
    assert cls.code in GRPC_STATUS, f"{cls.code}: no gRPC status in GRPC_STATUS"
    status = GRPC_STATUS[cls.code]
    if cls.code != "internal":  # a client's fault, or the server's state: never INTERNAL
        assert status not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), cls.code
    if issubclass(cls, errors.InvalidInput):
        assert status == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_statuses_of_the_issue() -> None:
    codes = grpc.StatusCode
    assert grpc_status(errors.InvalidInput("x")) == codes.INVALID_ARGUMENT
    assert grpc_status(errors.UnknownModelError("m")) == codes.NOT_FOUND
    assert grpc_status(errors.QueueFull(10, 5, 1)) == codes.RESOURCE_EXHAUSTED
    assert grpc_status(errors.DeadlineExceeded()) == codes.DEADLINE_EXCEEDED
    assert grpc_status(errors.NotReady()) == codes.UNAVAILABLE
    assert grpc_status(errors.Unauthorized("no token")) == codes.UNAUTHENTICATED
    assert grpc_status(errors.TooLarge("rows")) == codes.INVALID_ARGUMENT
    # the metrics count a gRPC request under the v2 route's HTTP status for the same error
    assert metrics_status(errors.QueueFull(10, 5, 1)) == 429
    assert metrics_status(errors.ClientGone()) == 499
