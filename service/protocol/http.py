"""The little of HTTP the prediction routes need, straight on ASGI.

The prediction routes are the hot path: a 1-row request costs about as much in framework
plumbing (routing, dependency resolution, request and response objects) as in the model.
They therefore read the body from ``receive`` and answer through ``send`` themselves, and
FastAPI keeps their declarations for the OpenAPI document and the few hosts that reach them
through its router (see :mod:`service.protocol.fastpath`).

A body is read whole, within two bounds: its own size (``WATCHTIME_MAX_BODY_BYTES``, 413) and
the bytes the worker holds for all its requests together (``WATCHTIME_MAX_BUFFERED_BODY_BYTES``,
:class:`~service.budget.ByteBudget`, 503), taken as the bytes arrive and given back when the
request ends (:meth:`HttpRequest.release`, which the callers of the handlers call on every
path). A gzip or deflate body is decompressed as it arrives, a block at a time, and both
bounds count what it decompresses to.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from service.budget import ByteBudget
from service.errors import (
    BodyBudgetSpent,
    ClientGone,
    InvalidInput,
    ServiceError,
    TooLarge,
    UnsupportedEncoding,
)
from service.protocol.errors import ErrorStyle

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


CODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
"""The request ``Content-Encoding`` values decoded, with their zlib ``wbits`` (gzip, and
``deflate`` as HTTP means it: the zlib format, as the Triton client sends it)."""

INFLATE_BLOCK = 1 << 20
"""Most decompressed bytes made at once: a decompression bomb costs no more than this
before its size is counted."""

BUDGET_RETRY_AFTER_S = 1
"""``Retry-After`` of a body refused because the worker's body budget is spent."""


@dataclass
class HttpRequest:
    """One request's headers (lower-cased names), its ASGI ``receive`` and, when given, the
    worker's budget of buffered body bytes that its body is held against."""

    headers: Mapping[str, str]
    receive: Receive
    budget: ByteBudget | None = None
    held: int = 0

    @classmethod
    def from_scope(
        cls, scope: Scope, receive: Receive, budget: ByteBudget | None = None
    ) -> HttpRequest:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return cls(headers, receive, budget)

    async def body(self, limit: int) -> bytes:
        """The whole body, decompressed when it has a ``Content-Encoding``.

        413 as soon as it (or what it decompresses to) is known to exceed ``limit`` bytes;
        415 for a content coding other than gzip and deflate; InvalidInput for a compressed
        body that is broken; 503 when the worker's budget of buffered body bytes
        cannot take it (its bytes are taken from the budget as they arrive, and stay taken
        until :meth:`release`). A client that disconnects during the upload raises
        ClientGone.
        """
        wbits = self._coding()
        declared = self.headers.get("content-length", "")
        length = int(declared) if declared.isascii() and declared.isdigit() else None
        if length is not None and length > limit:
            raise TooLarge(f"body of {length} bytes exceeds {limit}")
        budget = self.budget
        if length is not None and wbits is None and budget is not None and length > budget.free:
            raise _budget_spent(budget)  # refused before the client uploads it in vain
        inflater = None if wbits is None else _Inflater(wbits, limit, self.hold)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "http.disconnect":
                raise ClientGone()
            if kind != "http.request":
                continue
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"body exceeds {limit} bytes")
                if inflater is None:
                    self.hold(len(chunk))
                    chunks.append(chunk)
                else:
                    inflater.feed(chunk, chunks)
            if not message.get("more_body", False):
                break
        if inflater is not None:
            inflater.finish()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def hold(self, n: int) -> None:
        """Take ``n`` bytes of this request's body from the budget; 503 when they do not fit."""
        budget = self.budget
        if budget is None:
            return
        if not budget.take(n):
            raise _budget_spent(budget)
        self.held += n

    def release(self) -> None:
        """Give the body's bytes back to the budget: once the request is answered or failed."""
        held, self.held = self.held, 0
        if held and self.budget is not None:
            self.budget.give(held)

    def _coding(self) -> int | None:
        """The zlib ``wbits`` of the body's content coding (None: not encoded); 415 else."""
        raw = self.headers.get("content-encoding")
        if raw is None:
            return None
        coding = raw.strip().lower()
        if coding in ("", "identity"):
            return None
        wbits = CODINGS.get(coding)
        if wbits is None:
            raise UnsupportedEncoding(
                f"Content-Encoding {raw!r} is not supported: send gzip, deflate or no encoding",
                field="Content-Encoding",
                headers={"Accept-Encoding": "gzip, deflate"},
            )
        return wbits

    async def disconnected(self) -> None:
        """Completes when the client goes away (after the body has been read)."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return


def _budget_spent(budget: ByteBudget) -> BodyBudgetSpent:
    return BodyBudgetSpent(budget.held, budget.limit, BUDGET_RETRY_AFTER_S)


class _Inflater:
    """Decompresses a body as it arrives, in blocks, counting what it makes against the limit.

    A gzip body may hold several members one after the other (RFC 1952), each decoded in
    turn. What is made is taken from the budget block by block.
    """

    def __init__(self, wbits: int, limit: int, hold: Callable[[int], None]) -> None:
        self.wbits = wbits
        self.limit = limit
        self.hold = hold
        self.inflater = zlib.decompressobj(wbits)
        self.size = 0

    def feed(self, data: bytes, out: list[bytes]) -> None:
        try:
            while True:
                block = self.inflater.decompress(data, INFLATE_BLOCK)
                if block:
                    self.size += len(block)
                    if self.size > self.limit:
                        raise TooLarge(f"body decompresses to more than {self.limit} bytes")
                    self.hold(len(block))
                    out.append(block)
                data = self.inflater.unconsumed_tail
                if self.inflater.eof:
                    data = self.inflater.unused_data
                    if not data:
                        return
                    self.inflater = zlib.decompressobj(self.wbits)  # the next gzip member
                elif not data and len(block) < INFLATE_BLOCK:
                    return
        except zlib.error as exc:
            raise self._broken(str(exc)) from None

    def finish(self) -> None:
        if not self.inflater.eof:
            raise self._broken("the compressed body ends early")

    def _broken(self, why: str) -> InvalidInput:
        return InvalidInput(f"body: not a valid compressed body ({why})", field="body")


@dataclass
class Reply:
    """A response to send: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, err: ServiceError, style: ErrorStyle) -> Reply:
        """The error's status, headers and JSON body as its protocol writes it."""
        return cls(style.status(err), style.body(err), headers=err.headers)

    async def send(self, send: Send) -> None:
        raw = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode("latin-1")),
        ]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})
