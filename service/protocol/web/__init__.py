"""Pages for people: the API documentation and the distribution inspector (``/inspect``).

Everything a browser loads comes from files installed with the service: Swagger UI and
ReDoc from the pinned ``fastapi-offline`` package (FastAPI's self-hosting recipe:
``get_swagger_ui_html``/``get_redoc_html`` pointed at a StaticFiles mount), the inspector's
HTML, script and style from this package. No page asks anything of another host, so the
documentation works in a cluster with no way out.
"""
