"""Optional bearer-token authentication: a pure ASGI middleware in front of the whole app.

With ``WATCHTIME_API_KEYS`` set (comma-separated tokens), every request must carry
``Authorization: Bearer <one of them>``, except the probes (``/healthz``, ``/readyz``,
``/v2/health/live``, ``/v2/health/ready``), which load balancers and the kubelet call without
credentials, and ``/metrics`` unless ``WATCHTIME_METRICS_AUTH=true`` (Prometheus scrapes it
without a token by default). Everything else, prediction and model routes, ``/v2`` metadata,
the OpenAPI document, is refused with 401 and ``WWW-Authenticate: Bearer`` (RFC 6750), in the
error format of the route's protocol. Paths are matched exactly, so a variant of a probe's
path is protected, not open.

Tokens are compared with ``hmac.compare_digest`` against every configured key, so the time
taken says nothing about how much of a key was right or which key matched. The tokens travel
in clear text unless TLS protects them: terminate TLS in front of the service (see README).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.errors import Unauthorized
from service.protocol.errors import style_of
from service.protocol.web.pages import OPEN_PATHS, STATIC_PREFIX

PROBES = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
METRICS = "/metrics"
REALM = b'Bearer realm="watchtime"'


class BearerAuth:
    """Refuse HTTP requests without a valid bearer token, except on the open paths."""

    def __init__(self, app: ASGIApp, keys: Sequence[str], protect_metrics: bool = False) -> None:
        if not keys:
            raise ValueError("BearerAuth needs at least one key")
        self.app = app
        self.keys = [key.encode("ascii") for key in keys]
        self.open = (PROBES | OPEN_PATHS) if protect_metrics else (PROBES | OPEN_PATHS | {METRICS})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.open or path.startswith(STATIC_PREFIX):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        if token is not None and self.accepts(token):
            await self.app(scope, receive, send)
            return
        await unauthorized(scope, send, token_given=token is not None)

    def accepts(self, token: bytes) -> bool:
        return tokens_match(token, self.keys)


def tokens_match(token: bytes, keys: Sequence[bytes]) -> bool:
    """Constant-time comparison against every key (no early exit on a match)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return matched


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, None without one."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


async def unauthorized(scope: Scope, send: Send, token_given: bool) -> None:
    message = "a valid bearer token is required" if not token_given else "invalid bearer token"
    err = Unauthorized(message)
    style = style_of(scope["path"])
    body = style.body(err)
    challenge = REALM + (b', error="invalid_token"' if token_given else b"")
    await send(
        {
            "type": "http.response.start",
            "status": style.status(err),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Put BearerAuth in front of ``app`` when ``WATCHTIME_API_KEYS`` names any key."""
    keys = settings.api_key_list()
    if keys:
        app.add_middleware(BearerAuth, keys=keys, protect_metrics=settings.metrics_auth)
