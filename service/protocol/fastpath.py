"""The prediction routes served straight from ASGI, ahead of FastAPI's router.

FastAPI resolves a route by trying each pattern in turn, builds request and response objects
and runs its dependency machinery: for a 1-row request that costs as much as the prediction
itself. The five prediction paths are few and fixed, so this middleware matches them first
and calls the same handlers the FastAPI routes declare
(:func:`~service.protocol.native.endpoints.serve_predict`,
:func:`~service.protocol.v2.endpoints.serve_infer`); everything else, and anything these
patterns do not match exactly (a version that is not a number, a trailing slash), goes on
to FastAPI, whose declarations also make the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from service.dataplane import DataPlane
from service.protocol.errors import CLIENT_GONE_STATUS
from service.protocol.http import HttpRequest, Receive, Reply, Scope, Send
from service.protocol.native.endpoints import serve_predict
from service.protocol.v2.endpoints import serve_infer

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[..., Awaitable[Reply]]

_NAME = r"([^/]+)"
_VERSION = r"([0-9]+)"
ROUTES: tuple[tuple[re.Pattern[str], Handler], ...] = (
    (re.compile(r"/v1/predict"), serve_predict),
    (re.compile(rf"/v1/models/{_NAME}/predict"), serve_predict),
    (re.compile(rf"/v1/models/{_NAME}/versions/{_VERSION}/predict"), serve_predict),
    (re.compile(rf"/v2/models/{_NAME}/infer"), serve_infer),
    (re.compile(rf"/v2/models/{_NAME}/versions/{_VERSION}/infer"), serve_infer),
)


def match(path: str) -> tuple[Handler, str | None, str | None] | None:
    """The handler and (name, version) of a prediction path; None for any other path."""
    for pattern, handler in ROUTES:
        found = pattern.fullmatch(path)
        if found is not None:
            groups = found.groups()
            name = groups[0] if groups else None
            version = groups[1] if len(groups) > 1 else None
            return handler, name, version
    return None


class FastPath:
    """Pure ASGI middleware: POSTs to a prediction path are answered here."""

    def __init__(self, app: ASGIApp, plane: DataPlane) -> None:
        self.app = app
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = match(scope["path"])
            if found is not None:
                handler, name, version = found
                request = HttpRequest.from_scope(scope, receive, self.plane.body_budget)
                try:
                    reply = await handler(self.plane, request, name, version)
                finally:
                    request.release()  # on every path: answered, refused, failed, cancelled
                if reply.status != CLIENT_GONE_STATUS:  # nobody is left to read an answer
                    await reply.send(send)
                return
        await self.app(scope, receive, send)
