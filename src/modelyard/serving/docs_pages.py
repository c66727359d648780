"""``/docs`` (Swagger UI) and ``/redoc`` with their scripts and styles served by this server.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google): a
browser opening the docs of a server on a closed network gets a blank page, and every visitor's
browser is told about the server to a third party. Here the same pages point at
``/docs-assets/``, the Swagger UI and ReDoc distributions shipped in the ``fastapi-offline``
package (the only part of it used), so a page needs nothing but this server. The pages can be
switched off (``--no-docs``); ``/openapi.json`` stays, since clients read the schema from it.
"""

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
#: Sent with both pages: the browser itself refuses anything not from this server. ReDoc's side
#: menu always shows a logo from cdn.redoc.ly (no option turns it off); this blocks it.
#: Inline script and style: Swagger UI is started by an inline script, both inject styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)
ASSET_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOC_PATHS = frozenset({"/docs", "/redoc"})


def add_docs_pages(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and the assets they load to ``app`` (built with
    ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=ASSET_DIR), name="docs-assets")

    def where(request: Request, page: str) -> tuple[str, str, str]:
        """The assets' URL, the schema's URL and the title of ``page`` (behind any root_path)."""
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return f"{root}{ASSETS}", f"{root}{app.openapi_url}", f"{app.title} - {page}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        assets, schema, title = where(request, "Swagger UI")
        return local_only(
            get_swagger_ui_html(
                openapi_url=schema,
                title=title,
                swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                swagger_css_url=f"{assets}/swagger-ui.css",
                swagger_favicon_url=f"{assets}/favicon.png",
                # no badge fetched from validator.swagger.io; keys entered in "Authorize" kept
                swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        assets, schema, title = where(request, "ReDoc")
        return local_only(
            get_redoc_html(
                openapi_url=schema,
                title=title,
                redoc_js_url=f"{assets}/redoc.standalone.js",
                redoc_favicon_url=f"{assets}/favicon.png",
                with_google_fonts=False,
            )
        )


def local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page
