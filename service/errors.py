"""Every error the service raises on purpose, in one hierarchy.

Each error carries a ``code`` (a stable, machine-readable name), the request ``field`` and
``row`` it is about when there is one, and the response headers it needs (``Retry-After``).
It carries no status: a protocol turns a code into its own status with one table
(:mod:`service.protocol.errors` for HTTP, where invalid input is 422 on the native routes and
400 on the Open Inference Protocol's), so the code that finds a fault, a decoder, the
batcher or the model, does not need to know who asked.

The distribution families keep ``ParameterError`` of their own: they are a numeric library
with no idea of requests, and the model runtime turns their refusals into
:class:`FeatureError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

__all__ = [
    "BodyBudgetSpent",
    "ClientGone",
    "ConfigError",
    "DeadlineExceeded",
    "FeatureError",
    "FeatureStoreUnavailable",
    "FrameworkError",
    "InternalError",
    "InvalidInput",
    "MalformedBody",
    "ModelControlDisabled",
    "ModelLoadError",
    "NotReady",
    "QueueFull",
    "ServiceError",
    "TextTooLong",
    "TooLarge",
    "Unauthorized",
    "UnknownModelError",
    "UnsupportedEncoding",
]


class ServiceError(Exception):
    """The base of every deliberate error: a message for people, a code for programs."""

    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        row: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.row = row
        self.headers = dict(headers or {})

    @classmethod
    def at(cls, field: str, detail: str, row: int | None = None) -> Self:
        """The error about ``field`` (and ``row``), named at the head of the message too."""
        where = field + (f", row {row}" if row is not None else "")
        return cls(f"{where}: {detail}", field=field, row=row)

    def in_rows(self, rows_field: str) -> ServiceError:
        """The error as a client reads it when its rows were sent as ``rows_field``."""
        return self


# --------------------------------------------------------------------------- the request


class InvalidInput(ServiceError):
    """A request value the service cannot be asked with."""

    code = "invalid_input"


class MalformedBody(InvalidInput):
    """A body that does not parse (JSON, a compressed stream)."""

    code = "malformed_json"


class TextTooLong(InvalidInput):
    """A text value over the length limit."""

    code = "too_long"


class FeatureError(InvalidInput):
    """A fault in the request's rows, found past decoding: by the feature encoder, or by the
    model, whose output for a row is no distribution.

    ``column`` is the raw column at fault (None: the rows as a whole). The model runtime does
    not know how the client sent its rows (``features``, ``instances``, ``inputs``), so the
    protocol names the field with :meth:`in_rows`.
    """

    def __init__(self, column: str | None, detail: str, row: int | None = None) -> None:
        where = "features" if column is None else f"feature {column!r}"
        where += f", row {row}" if row is not None else ""
        super().__init__(f"{where}: {detail}", field=column, row=row)
        self.column = column
        self.detail = detail

    @property
    def feature(self) -> str | None:
        return self.column

    def at_row(self, row: int | None) -> FeatureError:
        """The same error about ``row`` (a request's own row, not its batch's)."""
        return FeatureError(self.column, self.detail, row)

    def in_rows(self, rows_field: str) -> ServiceError:
        field = rows_field if self.column is None else f"{rows_field}.{self.column}"
        return InvalidInput.at(field, self.detail, self.row)


class TooLarge(ServiceError):
    """A body, a decompressed body, a row count or a memory need over its limit."""

    code = "too_large"


class UnsupportedEncoding(ServiceError):
    """A ``Content-Encoding`` the service does not decode."""

    code = "unsupported_encoding"


class Unauthorized(ServiceError):
    """No bearer token, or one that is not among the configured keys."""

    code = "unauthorized"


class UnknownModelError(ServiceError, LookupError):
    """A model name (or name and version) that is not served."""

    code = "unknown_model"

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"{name!r}" if version is None else f"{name!r} version {version!r}"
        super().__init__(f"model {what} is not served", field="model")
        self.name = name
        self.version = version


# --------------------------------------------------------------------------- the server's state


class QueueFull(ServiceError):
    """The model's queue holds too many rows to take this request."""

    code = "queue_full"

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"the model's queue is full ({queued} rows queued, the limit is {limit}); retry later",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.retry_after_s = retry_after_s


class BodyBudgetSpent(ServiceError):
    """The worker holds as many request-body bytes as it may."""

    code = "body_budget_full"

    def __init__(self, held: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"the server holds {held} bytes of request bodies, its limit is {limit}; retry later",
            headers={"Retry-After": str(retry_after_s)},
        )


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its rows were run."""

    code = "deadline_exceeded"

    def __init__(self) -> None:
        super().__init__("the request's deadline passed while it was queued")


class NotReady(ServiceError):
    """The models are not loaded yet."""

    code = "not_ready"

    def __init__(self) -> None:
        super().__init__("models are not loaded yet")


class FeatureStoreUnavailable(ServiceError):
    """The feature store did not answer in time (down, slow, or holding no tables), and
    ``WATCHTIME_FEATURE_STORE_REQUIRED`` says a request must not go on without it.

    Without that policy the store raises it only to the lookup, which counts it and answers
    the rows with missing values. ``reason`` is the metrics label: ``timeout``,
    ``unavailable`` or ``no_tables``.
    """

    code = "feature_store_unavailable"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(
            f"the feature store is unavailable ({detail}); send every feature column, or "
            "retry later",
            headers={"Retry-After": "1"},
        )
        self.reason = reason


class ClientGone(ServiceError):
    """The client disconnected before its answer was ready."""

    code = "client_gone"

    def __init__(self) -> None:
        super().__init__("the client disconnected")


class InternalError(ServiceError):
    """A defect, not bad input: answered without internals, logged with its traceback."""

    code = "internal"

    def __init__(self) -> None:
        super().__init__("internal error")


class FrameworkError(ServiceError):
    """An HTTP error the web framework raised itself (no route, wrong method)."""

    def __init__(
        self, status: int, message: str, code: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        self.code = code


# --------------------------------------------------------------------------- start-up


class ModelLoadError(ServiceError):
    """A model directory that cannot be served; the message says why, in one line."""

    code = "model_unservable"


class ModelControlDisabled(ServiceError):
    """A load or unload request that the model control mode does not take."""

    code = "model_control_disabled"

    def __init__(self, mode: str) -> None:
        super().__init__(
            f"explicit model load and unload are disabled: WATCHTIME_MODEL_CONTROL is {mode!r} "
            "(only 'explicit' takes load and unload requests; 'poll' follows the repository's "
            "directories, 'none' loads them at start-up only)"
        )
        self.mode = mode


class ConfigError(ServiceError):
    """A configuration the service cannot start with; ``str()`` is one readable line."""

    code = "invalid_config"
