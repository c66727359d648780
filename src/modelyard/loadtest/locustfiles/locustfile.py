"""The one modelyard locustfile: ``modelyard loadtest URL`` or ``locust -f locustfile.py --host
URL``, for a served bundle of any project of a known task family.

Run only inside Locust's own process (Locust patches the standard library with gevent).
At test start the served model describes itself (``GET /info``, and ``/openapi.json`` for
tables); the payloads are built once from that by its task family's builder
(:data:`modelyard.loadtest.payloads.BUILDERS`) and sent at random. A user mostly posts
predictions, each with a fresh ``X-Request-ID``, and now and then reads ``/health`` and
``/info``. Any answer other than 200 (503 included) is a failure whose message holds the status
and the start of the body.

Options come from environment variables (see :mod:`modelyard.loadtest.options`).
"""

import csv
import json
import logging
import os
import random
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopTest, StopUser
from locust.runners import WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from modelyard.loadtest.options import SETUP_FAILED, SETUP_FAILED_EXIT_CODE, LoadOptions
from modelyard.loadtest.payloads import Payload, request_payloads

log = logging.getLogger("modelyard.loadtest")

BODY_CHARS = 200
FETCH_TIMEOUT_S = 10.0
#: A request without an answer after this long is a failure (below the runner's stop timeout,
#: so that a request still hanging when the run time is over is counted, not dropped).
REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


class RequestLog:
    """Appends request ids to a file, one line per write call (safe across processes)."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def open(self, path: Path | None) -> None:
        self.close()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, request_id: str) -> None:
        if self._fd is not None:
            os.write(self._fd, f"{request_id}\n".encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


REQUEST_LOG = RequestLog()
CHOICE = random.Random(0)


class Answer(Protocol):
    """What :func:`judge` needs of Locust's response (its own methods are not annotated)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str | None: ...
    def success(self) -> None: ...
    def failure(self, exc: str) -> None: ...


class ModelyardUser(FastHttpUser):
    """A client of ``modelyard serve``: 90 % predictions, 5 % ``/health``, 5 % ``/info``."""

    wait_time = between(0.01, 0.1)
    network_timeout = REQUEST_TIMEOUT_S
    connection_timeout = CONNECT_TIMEOUT_S
    payloads: ClassVar[list[Payload]] = []
    #: The API key header (empty for a server without keys), set at test start.
    auth: ClassVar[dict[str, str]] = {}

    def on_start(self) -> None:
        if not self.payloads:
            raise StopUser()  # the set-up failed; the test is being stopped

    @task(18)
    def predict(self) -> None:
        payload = CHOICE.choice(self.payloads)
        request_id = uuid.uuid4().hex
        headers = {
            "Content-Type": payload.content_type,
            "X-Request-ID": request_id,
            **self.auth,
        }
        body: Any = payload.body  # bytes: Locust's annotation says str, geventhttpclient takes both
        with self.client.post(
            "/predict", data=body, headers=headers, name="/predict", catch_response=True
        ) as response:
            if judge(response):
                REQUEST_LOG.append(request_id)

    @task(1)
    def health(self) -> None:
        self.read("/health")

    @task(1)
    def info(self) -> None:
        self.read("/info")

    def read(self, path: str) -> None:
        with self.client.get(path, name=path, headers=self.auth, catch_response=True) as response:
            judge(response)


def judge(response: Answer) -> bool:
    """Mark the request a success only on HTTP 200; return whether it was one."""
    status = response.status_code
    if status == 200:
        response.success()
        return True
    if not status:
        error = getattr(response, "error", None) or "connection failed"
        response.failure(f"no HTTP answer: {error}")
    else:
        response.failure(f"HTTP {status}: {(response.text or '')[:BODY_CHARS]}")
    return False


def fetch_json(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """GET a JSON object, directly (never through a proxy named in the environment)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {})
    with opener.open(request, timeout=FETCH_TIMEOUT_S) as answer:
        payload: dict[str, Any] = json.loads(answer.read())
    return payload


def prepare(
    environment: Environment, user_class: type[ModelyardUser], options: LoadOptions
) -> None:
    """Ask the server what it serves and build ``user_class``'s payloads from the answer."""
    host = (environment.host or user_class.host or "").rstrip("/")
    if not host:
        raise ValueError("no host to test: pass --host http://127.0.0.1:PORT")
    user_class.auth = options.auth_headers()
    info = fetch_json(f"{host}/info", user_class.auth)
    user_class.payloads = request_payloads(
        info, options, lambda: fetch_json(f"{host}/openapi.json", user_class.auth)
    )
    log.info(
        "modelyard: %d payload variant(s) for %s (task %s)",
        len(user_class.payloads),
        info.get("project"),
        info.get("task"),
    )


def on_test_start(environment: Environment, **_kwargs: Any) -> None:
    try:
        options = LoadOptions.from_env()
        CHOICE.seed(options.seed)
        for user_class in environment.user_classes:
            if issubclass(user_class, ModelyardUser):
                prepare(environment, user_class, options)
        REQUEST_LOG.open(options.request_log)
    except Exception as exc:
        environment.process_exit_code = SETUP_FAILED_EXIT_CODE
        raise StopTest(f"{SETUP_FAILED}: {exc}") from exc


def on_quitting(environment: Environment, **_kwargs: Any) -> None:
    REQUEST_LOG.close()
    rewrite_final_csv(environment)


def rewrite_final_csv(environment: Environment) -> None:
    """Write the final statistics into ``<prefix>_stats.csv`` and ``<prefix>_failures.csv``.

    Locust refreshes its CSV files once a second and does not write them again at shutdown, so
    they can miss the last second of requests (locustio/locust#1806, #2299); the terminal and
    HTML summaries do not. Here the users have stopped, so the statistics are final. Each file
    is replaced atomically: Locust's writer keeps its own handle on the old one.
    """
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix or isinstance(environment.runner, WorkerRunner):
        return  # no CSV asked for, or a worker process: only the master's statistics are whole
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (
        ("_stats.csv", writer.requests_csv),
        ("_failures.csv", writer.failures_csv),
    ):
        target = Path(f"{prefix}{suffix}")
        partial = target.with_name(f".{target.name}.final")
        with partial.open("w", newline="", encoding="utf-8") as handle:
            write(csv.writer(handle))
        partial.replace(target)


def listen(hook: Any, handler: Callable[..., None]) -> None:
    """``hook.add_listener(handler)`` (Locust's event hooks are not annotated)."""
    hook.add_listener(handler)


listen(events.test_start, on_test_start)
listen(events.quitting, on_quitting)
