"""The API's own description as pages, served by the service itself so they work offline.

``/docs`` is Swagger UI (try requests out), ``/redoc`` the same reference read-only (no
request can be sent from it). Both load Swagger UI from the installed ``swagger-ui-bundle``
package under ``/docs/assets/``, never from a CDN, and hold no inline script or style, so
they run under a strict Content-Security-Policy of their own (:data:`DOCS_CSP`) instead of
none at all. Everything here is public, holds no PHI and no tenant data.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from api.errors import ApiError

router = APIRouter(include_in_schema=False)

# Only 'self': no CDN, no inline code. Swagger UI's stylesheet embeds its icons as data:
# URIs; its scripts fetch /openapi.json (connect-src 'self').
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")

# The files of the bundle a page needs, by the name served; nothing else of the package.
BUNDLE_FILES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

# Page set-up, as scripts of their own (a CSP without 'unsafe-inline' refuses inline ones).
INIT_SCRIPTS = {
    "docs.js": "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui',"
               " deepLinking: true, persistAuthorization: false});\n",
    "redoc.js": "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui',"
                " deepLinking: true, supportedSubmitMethods: [], docExpansion: 'list',"
                " defaultModelsExpandDepth: 2});\n",
}

# Assets hold no PHI and change only with the installed package: browsers may keep them.
ASSET_CACHE = {"Cache-Control": "public, max-age=86400"}


def page(title: str, init: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/{init}"></script>
</body>
</html>
"""


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers={"Content-Security-Policy": DOCS_CSP})


@router.get("/docs")
async def docs() -> Response:
    return _html(page("phi-ledger API", "docs.js"))


@router.get("/redoc")
async def redoc() -> Response:
    return _html(page("phi-ledger API reference (read-only)", "redoc.js"))


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    if name in INIT_SCRIPTS:
        return Response(INIT_SCRIPTS[name], media_type="text/javascript; charset=utf-8",
                        headers=ASSET_CACHE)
    if name not in BUNDLE_FILES:
        raise ApiError(404, "not_found", "no such documentation asset", ["name"])
    path = Path(str(swagger_ui_path)) / name
    return FileResponse(path, media_type=BUNDLE_FILES[name], headers=ASSET_CACHE)
