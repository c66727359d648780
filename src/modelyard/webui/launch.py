"""Run the UI: find (or start) the prediction server, read what it serves, build the page and
serve it with uvicorn on its own port, in its own process: the prediction server's workers never
load Gradio."""

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

# The ui extra, imported first: without it `modelyard app` says so in one line before it starts
# any server (the command catches this ImportError).
import gradio as gr

from modelyard.core.errors import ModelyardError
from modelyard.serving.server_process import running_server
from modelyard.webui.client import ServerAnswerError, ServerClient
from modelyard.webui.views import ViewContext

if TYPE_CHECKING:
    from fastapi import FastAPI

#: Largest upload the UI accepts before it reaches the server (the server has its own limit,
#: which answers with its own sentence; this one only bounds the UI process's memory).
MAX_UPLOAD = "25mb"
#: Seconds open pages (each holds a streaming connection) get when the UI is stopped, so that the
#: UI, and with it the server it started, stops well within a supervisor's kill timeout.
SHUTDOWN_GRACE_S = 3
#: Seconds a server started for a bundle gets to become healthy.
SERVER_START_TIMEOUT_S = 120.0


def is_server_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


@contextmanager
def prediction_server(target: str) -> Iterator[str]:
    """The base URL of the server to talk to: ``target`` itself when it is a URL, else a
    ``modelyard serve TARGET`` (bundle directory or ``models:/`` URI) started on 127.0.0.1 for
    as long as the UI runs."""
    if is_server_url(target):
        yield target.rstrip("/")
        return
    with running_server(target, timeout_s=SERVER_START_TIMEOUT_S) as url:
        yield url


def connect(url: str, api_key: str | None, monitor_url: str | None) -> ViewContext:
    """Read ``/info`` once; a server that does not answer is a one-line error."""
    client = ServerClient(url, api_key=api_key)
    try:
        info = client.info()
    except ServerAnswerError as error:
        client.close()
        raise ModelyardError(str(error)) from error
    return ViewContext(client=client, info=info, monitor_url=monitor_url)


def run_ui(
    target: str,
    host: str,
    port: int,
    api_key: str | None = None,
    monitor_url: str | None = None,
    log_level: str = "warning",
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the UI for ``target`` until interrupted; ``announce`` gets one line saying where,
    once the server has answered."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with prediction_server(target) as url:
            context = connect(url, api_key, monitor_url)
            try:
                app = ui_asgi_app(context)
                announce(f"modelyard UI for {url} at http://{host}:{port}")
                serve_page(app, host, port, log_level)
            finally:
                context.client.close()
    except TerminatedError:
        return  # SIGTERM: the `with` above has stopped the server it started
    finally:
        signal.signal(signal.SIGTERM, previous)


class TerminatedError(Exception):
    """SIGTERM reached the UI: unwind, so that a server started for a bundle stops with it."""


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise TerminatedError


def serve_page(app: "FastAPI", host: str, port: int, log_level: str) -> None:
    """Uvicorn until a signal; it re-raises SIGTERM once shut down, which :func:`_stop` turns
    into :class:`TerminatedError` (Python's default would end the process before any cleanup)."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


def ui_asgi_app(context: ViewContext) -> "FastAPI":
    """The page mounted at ``/`` of a bare FastAPI app."""
    from fastapi import FastAPI

    from modelyard.webui.app import CSS, THEME, build_app

    try:
        blocks = build_app(context)
    except (ValueError, ServerAnswerError) as error:
        raise ModelyardError(str(error)) from error
    app: FastAPI = gr.mount_gradio_app(
        FastAPI(docs_url=None, redoc_url=None, openapi_url=None),
        blocks,
        path="",
        theme=THEME,
        css=CSS,
        footer_links=[],
        max_file_size=MAX_UPLOAD,
        show_error=True,
    )
    return app
