"""Start ``modelyard serve`` as a real subprocess on 127.0.0.1 and stop it cleanly.

Used by the demo, the integration tests and the benchmarks: they all talk to the same server a
user would run, over real HTTP.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from modelyard.core.errors import ModelyardError

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    path: str = "/health",
    interval_s: float = 0.05,
) -> float:
    """Poll ``path`` (``/health``, ``/ready``, ...) until it answers 200; return the seconds it
    took. A process that exits first is an error carrying the end of its output."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if process.poll() is not None:
            pipe = process.stdout or process.stderr
            output = pipe.read().decode(errors="replace") if pipe else ""
            raise ModelyardError(f"server exited with code {process.returncode}:\n{output[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}{path}", timeout=1.0).status_code == 200:
                return time.perf_counter() - started
        time.sleep(interval_s)
    raise ModelyardError(f"server at {url} did not answer {path} within {timeout_s:.0f} s")


@contextlib.contextmanager
def running_server(
    bundle: Path | str,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``modelyard serve BUNDLE`` on 127.0.0.1 and yield its base URL; SIGTERM it on exit."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "modelyard",
        "serve",
        str(bundle),
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        # stopped by its user, nobody to drain for (extra_args may ask for it)
        "--drain-seconds",
        "0",
        *extra_args,
    ]
    with running_process(command, f"http://{HOST}:{port}", "/health", timeout_s, env) as url:
        yield url


@contextlib.contextmanager
def running_process(
    command: Sequence[str],
    url: str,
    ready_path: str,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``command`` (a server answering on ``url``), yield ``url`` once ``ready_path`` answers
    200, and SIGTERM it on exit (killed after 15 s)."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    try:
        wait_until_healthy(url, process, timeout_s, path=ready_path)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            process.stdout.close()
