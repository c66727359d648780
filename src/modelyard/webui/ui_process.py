"""Start ``modelyard app`` as a real subprocess on 127.0.0.1 (tests and benchmarks use the UI a
user would run), ready once its page answers."""

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from modelyard.serving.server_process import HOST, free_port, running_process

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
