"""The routes of the pages: ``/docs``, ``/redoc``, ``/inspect``, their assets under
``/static/``, and the inspector's sample rows, ``GET /v1/inspect/rows``.

Access control (with ``WATCHTIME_API_KEYS``, see :mod:`service.auth`): the files under
``/static/`` and the inspector's page are the same in every deployment and carry no model,
data or setting, so they are open (a browser cannot add a bearer token to a page it
navigates to; the inspector asks for the token and sends it with its own calls). What
describes or serves this deployment needs the token: ``/openapi.json``, ``/docs`` and
``/redoc`` (which only render it), the sample rows and every API route.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

STATIC_PREFIX = "/static/"
DOCS_ASSETS = "/static/docs"
INSPECT_ASSETS = "/static/inspect"
INSPECT_PAGE = "/inspect"
SAMPLE_ROWS_ROUTE = "/v1/inspect/rows"
OPEN_PATHS = frozenset({INSPECT_PAGE})
"""Exact paths open without a token (besides everything under ``STATIC_PREFIX``)."""

HERE = Path(__file__).resolve().parent
INSPECT_DIR = HERE / "static"
SAMPLE_ROWS_FILE = HERE / "test_day_rows.json"

#: The inspector's page may load and call nothing but this origin (inline code included).
INSPECT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


#: ReDoc's bundle shows Redocly's logo from their CDN in its side menu, unconditionally; the
#: bundle is served with that address replaced by an empty image, which the component hides.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
NO_IMAGE = b"data:,"

#: Swagger UI and ReDoc pages: their own scripts and this origin's calls only; their styles
#: are injected at run time (inline), and ReDoc runs its search in a blob: worker.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def with_csp(page: HTMLResponse) -> HTMLResponse:
    """The page with a Content-Security-Policy that admits its own inline scripts by hash."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(bytes(page.body))
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP.format(hashes=hashes)
    return page


@functools.cache
def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle as fastapi-offline ships it, less the CDN logo."""
    return (docs_assets_dir() / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, NO_IMAGE)


def docs_assets_dir() -> Path:
    """Swagger UI's and ReDoc's bundled files, as the fastapi-offline package installs them."""
    return Path(str(resources.files("fastapi_offline") / "static"))


@functools.cache
def sample_rows() -> bytes:
    """The shipped test-day rows (written by ``python -m model_export sample-rows``)."""
    return SAMPLE_ROWS_FILE.read_bytes()


def install_pages(app: FastAPI) -> None:
    """Mount the assets and add the pages' routes to ``app`` (built with docs_url=None)."""

    @app.get(f"{DOCS_ASSETS}/redoc.standalone.js", include_in_schema=False)
    async def redoc_js() -> Response:  # ahead of the mount, which would serve the original
        return Response(redoc_bundle(), media_type="text/javascript; charset=utf-8")

    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets_dir()), name="docs-assets")
    app.mount(INSPECT_ASSETS, StaticFiles(directory=INSPECT_DIR), name="inspect-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    favicon = f"{DOCS_ASSETS}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return with_csp(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=favicon,
                oauth2_redirect_url=redirect_url,
                # no badge fetched from validator.swagger.io: nothing leaves the machine
                swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": False},
            )
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return with_csp(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=favicon,
                with_google_fonts=False,
            )
        )

    @app.get(INSPECT_PAGE, include_in_schema=False)
    async def inspect_page() -> Response:
        page = (INSPECT_DIR / "inspect.html").read_bytes()
        headers = {"Content-Security-Policy": INSPECT_CSP, "Cache-Control": "no-cache"}
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    @app.get(SAMPLE_ROWS_ROUTE, tags=["inspect"], summary="Sample rows of the test day")
    async def inspect_rows() -> Response:
        """50 real rows of the held-out test day, with every column the shipped models read,
        their observed watch time (``watch_time_s``, never an input) and the KuaiRand
        attribution: the rows the ``/inspect`` page offers. Each row can be sent as is in
        ``instances``."""
        return Response(sample_rows(), media_type="application/json")
