"""API-key authentication: a plain ASGI middleware in front of every route but the probes.

A request is let through when it carries one of the server's keys, as ``Authorization: Bearer
<key>`` or ``X-API-Key: <key>``; otherwise it is answered 401 with ``WWW-Authenticate: Bearer
realm="modelyard"``, counted as ``modelyard_http_rejected{reason="unauthorized"}`` and never
reaches the app. The name of the key used is left in the scope for the access log.

Exempt: ``/health`` and ``/ready`` always (orchestrators probe without credentials and they tell
nothing but "up" and the model's name), ``/metrics`` only with ``--metrics-public``. The OpenAPI
schema, ``/docs`` and ``/redoc`` need a key like every other route: they describe the model's
inputs to whoever may call it. Per request this is one header scan, one sha256 and one
constant-time comparison per key (see ``docs/benchmarks.md`` for what it costs).
"""

from typing import Any

from fastapi import FastAPI

from modelyard.serving.api_keys import KeyRing
from modelyard.serving.metrics import ServiceMetrics
from modelyard.serving.middleware import API_KEY_NAME, ASGIApp, Receive, Scope, Send, send_error

ALWAYS_OPEN = frozenset({"/health", "/ready"})
REALM = b'Bearer realm="modelyard"'
_API_KEY_HEADER = b"x-api-key"
_UNAUTHORIZED = (
    "missing or unknown API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
)


def exempt_paths(metrics_public: bool) -> frozenset[str]:
    """The paths that need no key (and no allowed Host, see :mod:`.hosts`)."""
    return ALWAYS_OPEN | {"/metrics"} if metrics_public else ALWAYS_OPEN


class ApiKeyMiddleware:
    def __init__(
        self, app: ASGIApp, keys: KeyRing, metrics: ServiceMetrics, metrics_public: bool
    ) -> None:
        self.app = app
        self.keys = keys
        self.open = exempt_paths(metrics_public)
        self.rejected = metrics.rejected.labels("unauthorized")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open:
            await self.app(scope, receive, send)
            return
        name = self.keys.match(presented_token(scope))
        if name is None:
            self.rejected.inc()
            await send_error(send, 401, _UNAUTHORIZED, [(b"www-authenticate", REALM)])
            return
        scope[API_KEY_NAME] = name
        await self.app(scope, receive, send)


def presented_token(scope: Scope) -> str:
    """The bearer token or X-API-Key value of the request ('' when there is none)."""
    for header, value in scope.get("headers") or ():
        if header == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
        elif header == _API_KEY_HEADER:
            return str(value.decode("latin-1").strip())
    return ""


def document_auth(app: FastAPI, metrics_public: bool) -> None:
    """Declare the two ways to send a key in the OpenAPI schema (Swagger UI's "Authorize"), and
    the 401 on every operation that needs one."""
    build = app.openapi
    open_paths = exempt_paths(metrics_public)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        needed: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if path in open_paths:
                    continue
                operation["security"] = needed
                operation.setdefault("responses", {})["401"] = {
                    "description": "Missing or unknown API key"
                }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
