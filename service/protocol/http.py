"""The little of HTTP the prediction routes need, straight on ASGI.

The prediction routes are the hot path: a 1-row request costs about as much in framework
plumbing (routing, dependency resolution, request and response objects) as in the model.
They therefore read the body from ``receive`` and answer through ``send`` themselves, and
FastAPI keeps their declarations for the OpenAPI document and the few hosts that reach them
through its router (see :mod:`service.protocol.fastpath`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from service.dataplane import ClientGone
from service.protocol.errors import ApiError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class HttpRequest:
    """One request's headers (lower-cased names) and its ASGI ``receive``."""

    headers: Mapping[str, str]
    receive: Receive
    body_done: bool = False

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> HttpRequest:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return cls(headers, receive)

    async def body(self, limit: int) -> bytes:
        """The whole body, 413 as soon as it is known to exceed ``limit`` bytes.

        A client that disconnects during the upload raises ClientGone.
        """
        declared = self.headers.get("content-length")
        known = declared is not None and declared.isascii() and declared.isdigit()
        if known and int(declared) > limit:  # type: ignore[arg-type]
            raise ApiError(413, f"body of {declared} bytes exceeds {limit}", code="too_large")
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
                    raise ApiError(413, f"body exceeds {limit} bytes", code="too_large")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.body_done = True
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def disconnected(self) -> None:
        """Completes when the client goes away (after the body has been read)."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return


@dataclass
class Reply:
    """A response to send: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, send: Send) -> None:
        raw = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode("latin-1")),
        ]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})
