"""The /docs page: Swagger UI over /api/v1/openapi.json, from assets bundled in a PyPI package.

The assets come from flask-swagger-ui's ``dist/`` (the official swagger-ui-dist files), served
from this origin: no CDN.  The package's own page bootstraps Swagger UI with an inline script,
which the page's CSP refuses, so only its static files are used; the page and its start-up
script are ours (``static/docs.html``, ``static/swagger-init.js``).
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, abort, current_app, send_from_directory

bp = Blueprint("docs", __name__)

ASSETS = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
# Only what the page loads; the package's HTML (inline script) and OAuth redirect page are not served.
SERVED = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "index.css", "favicon-32x32.png", "favicon-16x16.png"})

# As strict as Swagger UI allows: scripts from this origin only, no eval, no inline script or
# style elements (BaseLayout: the standalone top bar's logo carries a <style> element).
# img-src data: is for the SVG icons inlined in swagger-ui.css; connect-src 'self' for the
# OpenAPI document and "Try it out".
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@bp.get("/docs")
def page() -> Response:
    response = current_app.send_static_file("docs.html")
    response.headers["Content-Security-Policy"] = CSP
    return response


@bp.get("/docs/assets/<name>")
def asset(name: str) -> Response:
    if name not in SERVED:
        abort(404)
    return send_from_directory(ASSETS, name)
