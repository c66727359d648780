"""Graceful stop under load: drain first, then let uvicorn shut down.

On SIGTERM (an orchestrator stopping the pod, ``kill``, the supervisor of several workers) a worker
does not stop at once. For ``drain_s`` seconds it keeps serving but says it is going away:
``/ready`` answers 503, so a load balancer stops sending new clients, and every response carries
``Connection: close``, so each client finishes its current request and then reconnects (to another
instance, or to a closed port: a clean "connection refused", never a request cut off half-way on a
keep-alive connection that the server closed under it). Then uvicorn's own graceful shutdown runs:
it stops accepting, waits for the requests still in flight, and the app's shutdown flushes the
prediction log. A second SIGTERM, or SIGINT, stops without draining.

The handler itself only sets a flag and hands the work to the event loop: Python runs a signal
handler in the main thread between two bytecodes, possibly while that thread holds a lock (a
Prometheus value's, the logging module's). Work that takes such a lock inside the handler
deadlocks the worker for good; it did, once, under load (``start_draining`` setting the ready
gauge while a request's histogram update held the same multiprocess value lock).
"""

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

SignalHandler = Callable[[int, FrameType | None], Any]


class Drain:
    """Shared flag: set once a stop has been asked for and the worker is draining."""

    def __init__(self) -> None:
        self.active = False


def install_drain_on_sigterm(
    drain: Drain, loop: asyncio.AbstractEventLoop, drain_s: float, on_start: Callable[[], None]
) -> SignalHandler | None:
    """Put a draining SIGTERM handler in front of the current one (uvicorn's); return that one.

    Only in the main thread (where signal handlers live) and only when some handler is there to
    finish the stop; otherwise nothing changes and None is returned.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or drain_s <= 0:
        return None

    def finish(signum: int) -> None:
        previous(signum, None)

    def start(signum: int) -> None:
        on_start()
        loop.call_later(drain_s, finish, signum)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if drain.active:  # asked twice: stop now
            previous(signum, frame)
            return
        drain.active = True
        loop.call_soon_threadsafe(start, signum)  # no locks taken in the handler itself

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (e.g. a test client's portal thread)
        return None
    return previous
