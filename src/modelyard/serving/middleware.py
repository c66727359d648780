"""The service layer around every request: id, limits, timeout, metrics, access log, prediction log.

A plain ASGI middleware (no per-request task or thread), outermost in the app, so that it sees the
status every response really had, including refusals:

* ``X-Request-ID``: taken from the request when it is a sane token, else generated; returned on
  every response and attached to every log line and prediction-log row of the request;
* body size: over ``max_body_bytes`` (declared or streamed) -> 413 before the route reads it all;
* concurrency: beyond ``max_concurrency`` requests in flight -> 503 with ``Retry-After`` at once,
  so an overloaded worker sheds load instead of queueing without bound;
* timeout: a request still unanswered after ``request_timeout_s`` -> 504;
* unexpected errors -> a JSON 500 with the request id, logged with the traceback.

The probes (``/health``, ``/ready``, ``/metrics``) are exempt from the concurrency limit and the
timeout: an overloaded worker must still say so.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from modelyard.serving.context import (
    REQUEST_ID_HEADER,
    RequestContext,
    current_request,
    request_id_from,
)
from modelyard.serving.draining import Drain
from modelyard.serving.metrics import ServiceMetrics
from modelyard.serving.settings import ServerSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Called after a response with status 200 that recorded a prediction (context, route, seconds).
PredictionSink = Callable[[RequestContext, str, float], None]

PROBES = frozenset({"/health", "/ready", "/metrics"})
#: Scope key under which the auth middleware leaves the name of the key a request used.
API_KEY_NAME = "modelyard.api_key"
access_log = logging.getLogger("modelyard.access")
log = logging.getLogger("modelyard.serving")
_ID_HEADER = REQUEST_ID_HEADER.lower().encode()


class BodyTooLarge(HTTPException):
    """Raised while a streamed body is read past the limit; FastAPI answers it as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class ServiceMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        settings: ServerSettings,
        metrics: ServiceMetrics,
        on_prediction: PredictionSink | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.app = app
        self.drain = drain or Drain()
        self.settings = settings
        self.metrics = metrics
        self.on_prediction = on_prediction
        self.in_flight = 0
        self._label_cache: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        context = RequestContext(request_id_from(_decode(headers.get(_ID_HEADER))))
        token = current_request.set(context)
        response = _ResponseState(send, context.request_id, self.drain)
        try:
            await self._handle(scope, receive, response, headers)
        finally:
            current_request.reset(token)
            self._finish(scope, context, response.status)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        response: "_ResponseState",
        headers: dict[bytes, bytes],
    ) -> None:
        probe = scope.get("path", "") in PROBES
        limit = self.settings.max_body_bytes
        declared = _decode(headers.get(b"content-length"))
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.rejected.labels("too_large").inc()
            await response.error(413, f"request body larger than {limit} bytes")
            return
        if not probe and self.in_flight >= self.settings.max_concurrency:
            self.metrics.rejected.labels("overload").inc()
            retry = [(b"retry-after", str(self.settings.retry_after_s).encode())]
            await response.error(503, "server busy; retry later", retry)
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            if probe:
                await self.app(scope, _limited(receive, limit), response.send)
            else:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    await self.app(scope, _limited(receive, limit), response.send)
        except TimeoutError:
            self.metrics.rejected.labels("timeout").inc()
            timeout = self.settings.request_timeout_s
            await response.error(504, f"no answer within the {timeout:g} s request timeout")
        except BodyTooLarge as exc:
            self.metrics.rejected.labels("too_large").inc()
            await response.error(413, str(exc.detail))
        except Exception:
            self.metrics.errors.inc()
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await response.error(500, "internal error")
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    def _finish(self, scope: Scope, context: RequestContext, status: int) -> None:
        seconds = time.perf_counter() - context.started
        route = _route_template(scope)
        method = str(scope.get("method", ""))
        count, latency = self._series(route, method, status)
        count.inc()
        latency.observe(seconds)
        if self.settings.access_log and access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d",
                method,
                scope.get("path", ""),
                status,
                extra={
                    "request_id": context.request_id,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                    "api_key": scope.get(API_KEY_NAME),
                },
            )
        if status == 200 and context.prediction is not None and self.on_prediction is not None:
            self.on_prediction(context, route, seconds)

    def _series(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram of one label set (looked up once)."""
        key = (route, method, status)
        series = self._label_cache.get(key)
        if series is None:
            code = str(status)
            series = (
                self.metrics.requests.labels(route, method, code),
                self.metrics.latency.labels(route, method, code),
            )
            self._label_cache[key] = series
        return series


class _ResponseState:
    """Wraps ``send``: adds the request id header (and ``Connection: close`` while draining)
    and remembers the status sent."""

    def __init__(self, send: Send, request_id: str, drain: Drain) -> None:
        self._send = send
        self._id = request_id.encode()
        self._drain = drain
        self.status = 0
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            headers = [*message.get("headers", ()), (_ID_HEADER, self._id)]
            if self._drain.active:  # the client reconnects for its next request
                headers.append((b"connection", b"close"))
            message["headers"] = headers
        await self._send(message)

    async def error(
        self, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """A JSON error, unless the response has already begun (then only its status counts)."""
        if self.started:
            self.status = self.status or status
            return
        await send_error(self.send, status, detail, extra)


async def send_error(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``{"detail": detail}`` with ``status`` (and the ``extra`` headers)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`BodyTooLarge` once more than ``limit`` bytes arrived."""
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


def _route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label values), else ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _decode(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
