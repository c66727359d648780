"""Start ``modelyard app`` as a real subprocess on 127.0.0.1 (tests and benchmarks use the UI a
user would run), ready once its page answers."""

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from modelyard.serving.server_process import HOST, free_port, running_process

#: How tests and benchmarks run Debian's chromium headless here (no sandbox as root, no GPU, no
#: background calls home: the page must work offline).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking")
#: Seconds the UI gets to answer its page (importing Gradio alone takes a few).
UI_START_TIMEOUT_S = 120.0


@contextmanager
def running_ui(
    target: str,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = UI_START_TIMEOUT_S,
) -> Iterator[str]:
    """Run ``modelyard app TARGET`` and yield the page's URL; stop it (and any server it
    started) on exit."""
    port = free_port()
    command = [sys.executable, "-m", "modelyard", "app", target, "--host", HOST]
    command += ["--port", str(port), *extra_args]
    with running_process(command, f"http://{HOST}:{port}", "/", timeout_s, env) as url:
        yield url


def child_commands(pid: int) -> dict[int, list[str]]:
    """The direct children of process ``pid`` with their command lines (Linux ``/proc``): how a
    test or benchmark finds the server that ``modelyard app BUNDLE`` started."""
    found: dict[int, list[str]] = {}
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in listing.read_text().split():
            try:
                raw = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue  # ended meanwhile
            found[int(child)] = raw.decode(errors="replace").rstrip("\0").split("\0")
    return found


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, ended but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
