"""``modelyard loadtest``: Locust, headless, against a modelyard server on this machine.

The server must be on 127.0.0.1, localhost or ::1, and must answer ``GET /info`` first; its
``task`` picks how payloads are built (any project of a known task family can be load-tested,
see :mod:`.payloads`). Locust runs as a subprocess (it patches
the standard library with gevent on import, which must never happen in this process), bounded
in time, writing into the output directory:

    locust_stats.csv, locust_failures.csv, ...   Locust's CSV statistics
    report.html                                   Locust's HTML report
    locust.log                                    what Locust printed
    summary.json                                  :class:`LoadTestSummary` as JSON
"""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from modelyard.core.errors import ModelyardError
from modelyard.core.runs import default_workdir, timestamp_name
from modelyard.loadtest.locustfiles import LOCUSTFILE
from modelyard.loadtest.options import API_KEY_ENV, SETUP_FAILED, LoadOptions
from modelyard.loadtest.payloads import unknown_task
from modelyard.loadtest.report import LoadTestSummary, read_failures, read_stats

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CSV_PREFIX = "locust"
REPORT_HTML = "report.html"
LOG_FILE = "locust.log"
#: Seconds Locust gives users to finish their request after the run time is over (more than
#: the locustfiles' request timeout, so that every request started is counted).
STOP_TIMEOUT_S = 15
#: Extra seconds allowed for Locust to start, stop and write its reports before it is killed.
MARGIN_S = 60.0
INFO_TIMEOUT_S = 10.0
#: Locust's exit codes that still mean "the test ran": 0 (no failure), 1 (some failed).
RAN = (0, 1)


def run_loadtest(
    url: str,
    project: str | None,
    users: int,
    spawn_rate: float,
    duration_s: float,
    output_dir: Path | None = None,
    options: LoadOptions | None = None,
    stop_timeout_s: int = STOP_TIMEOUT_S,
) -> LoadTestSummary:
    """Load-test the modelyard server at ``url`` (local only) and summarise what Locust measured.

    ``project``, when given, is the project the server must be serving (a check against load
    testing the wrong server); the summary names the served one. ``output_dir`` defaults to
    ``<workdir>/loadtests/<project>-<UTC timestamp>``; ``options`` to the
    ``MODELYARD_LOADTEST_*`` environment variables. ``duration_s`` is rounded up to whole
    seconds (Locust's unit). Failed requests do not raise: they are in the summary.
    :class:`ModelyardError` is raised for bad arguments, a non-local host, no server, another
    project than ``project``, an unknown task family, a missing Locust, or a Locust run that
    could not happen.
    """
    check_arguments(users, spawn_rate, duration_s, stop_timeout_s)
    base = local_base_url(url)
    require_locust()
    options = options or LoadOptions.from_env()
    info = server_info(base, options.auth_headers())
    chosen = check_served(project, info, base)
    seconds = max(1, math.ceil(duration_s))
    out = output_dir or default_workdir() / "loadtests" / f"{chosen}-{timestamp_name()}"
    out.mkdir(parents=True, exist_ok=True)
    command = locust_command(LOCUSTFILE, base, users, spawn_rate, seconds, stop_timeout_s)
    env = options.to_env()
    code = run_bounded(command, out, env, seconds + stop_timeout_s)
    return summarise(out, base, chosen, users, spawn_rate, seconds, code)


def check_arguments(users: int, spawn_rate: float, duration_s: float, stop_timeout_s: int) -> None:
    if users < 1:
        raise ModelyardError(f"users must be at least 1, got {users}")
    if not spawn_rate > 0 or not math.isfinite(spawn_rate):
        raise ModelyardError(
            f"spawn rate must be a positive number of users per second, got {spawn_rate}"
        )
    if not duration_s > 0 or not math.isfinite(duration_s):
        raise ModelyardError(f"duration must be a positive number of seconds, got {duration_s}")
    if stop_timeout_s < 0:
        raise ModelyardError(f"stop timeout must be 0 or more seconds, got {stop_timeout_s}")


def local_base_url(url: str) -> str:
    """``url`` without a trailing slash, if it is http(s) on this machine; a clear error if not."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ModelyardError(f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ModelyardError(f"the URL must look like http://127.0.0.1:8000, not {url!r}")
    if host not in LOCAL_HOSTS:
        raise ModelyardError(
            f"refusing to load-test {host}: only a server on this machine "
            f"({', '.join(LOCAL_HOSTS)}) may be load-tested"
        )
    if parts.query or parts.fragment:
        raise ModelyardError(f"the URL must not have a query or fragment: {url!r}")
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}{f':{port}' if port else ''}{parts.path.rstrip('/')}"


def require_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        raise ModelyardError(
            'Locust is not installed; install it with: pip install "modelyard[loadtest]"'
        )


def server_info(base: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``GET /info``: what the server serves; a clear error when nothing (modelyard) answers."""
    try:
        # trust_env=False: never through a proxy from the environment, always to this machine
        answer = httpx.get(f"{base}/info", headers=headers, timeout=INFO_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as exc:
        raise ModelyardError(
            f"no server answers at {base} ({type(exc).__name__}: {exc}); "
            f"start one with: modelyard serve BUNDLE --port PORT"
        ) from None
    if answer.status_code == 401:
        raise ModelyardError(
            f"{base} needs an API key ({'the one given was refused' if headers else 'none given'}):"
            f" pass --api-key or set ${API_KEY_ENV}"
        )
    if answer.status_code != 200:
        raise ModelyardError(
            f"GET {base}/info answered HTTP {answer.status_code}: {answer.text[:200]}"
        )
    try:
        info = answer.json()
    except ValueError:
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("project"), str):
        raise ModelyardError(f"{base} is not a modelyard server: /info has no project")
    return info


def check_served(project: str | None, info: dict[str, Any], base: str) -> str:
    """The served project, if the load test can feed its task family and it is ``project``
    (when one is named)."""
    served = str(info["project"])
    reason = unknown_task(info)
    if reason is not None:
        raise ModelyardError(f"cannot load-test {base}: {reason}")
    if project is not None and project != served:
        raise ModelyardError(
            f"{base} serves project {served!r} (task {info.get('task')!r}), not {project!r}"
        )
    return served


def locust_command(
    file: Path, base: str, users: int, spawn_rate: float, seconds: int, stop_timeout_s: int
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(file),
        "--headless",
        "--host",
        base,
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn_rate:g}",
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        f"{stop_timeout_s}s",
        "--csv",
        CSV_PREFIX,
        "--html",
        REPORT_HTML,
        "--only-summary",
    ]


def run_bounded(command: list[str], out: Path, env: dict[str, str], expected_s: float) -> int:
    """Run Locust in ``out`` (its reports land there), killing it if it overruns; its exit code."""
    deadline = expected_s + MARGIN_S
    with (out / LOG_FILE).open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=out,  # also keeps Locust from reading a locust.conf or pyproject.toml elsewhere
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        try:
            return process.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            stop(process)
            raise ModelyardError(
                f"Locust did not finish within {deadline:.0f} s and was stopped; "
                f"see {out / LOG_FILE}"
            ) from None
        finally:
            if process.poll() is None:  # interrupted (Ctrl-C): do not leave it running
                stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def summarise(
    out: Path, base: str, project: str, users: int, spawn_rate: float, seconds: int, code: int
) -> LoadTestSummary:
    """Read Locust's CSV files into a summary and write ``summary.json``."""
    stats_csv = out / f"{CSV_PREFIX}_stats.csv"
    if code not in RAN or not stats_csv.is_file():
        raise ModelyardError(f"Locust failed (exit code {code}): {log_reason(out / LOG_FILE)}")
    total, endpoints = read_stats(stats_csv)
    summary = LoadTestSummary(
        url=base,
        project=project,
        users=users,
        spawn_rate=spawn_rate,
        duration_s=seconds,
        total=total,
        endpoints=endpoints,
        failures=read_failures(out / f"{CSV_PREFIX}_failures.csv"),
        locust_exit_code=code,
        output_dir=out,
        report_html=out / REPORT_HTML,
        stats_csv=stats_csv,
        log=out / LOG_FILE,
    )
    summary.write()
    return summary


def log_reason(log: Path, lines: int = 5) -> str:
    """The set-up failure line of Locust's log, else its last lines, for an error message."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    for line in text.splitlines():
        if SETUP_FAILED in line:
            return line[line.index(SETUP_FAILED) :] + f" (log: {log})"
    tail = " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())
    return f"{tail or 'no output'} (log: {log})"
