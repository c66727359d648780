"""The draining SIGTERM handler: it must not take a lock itself, because Python runs it in the main
thread wherever that thread happens to be, possibly inside a locked section (a Prometheus value's,
the logging module's): a worker deadlocked for good that way under load."""

import asyncio
import signal
import threading

from modelyard.serving.draining import Drain, install_drain_on_sigterm


def test_the_sigterm_handler_leaves_the_drain_work_to_the_event_loop() -> None:
    loop = asyncio.new_event_loop()
    stopped: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, _frame: stopped.append(signum))
    lock = threading.Lock()  # stands for the metric value lock the interrupted code holds
    events: list[str] = []

    def on_start() -> None:  # what start_draining does: set a gauge, log a line (locks)
        if lock.acquire(timeout=1):
            events.append("draining")
            lock.release()
        else:
            events.append("deadlocked")

    try:
        drain = Drain()
        assert install_drain_on_sigterm(drain, loop, 0.05, on_start) is not None
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        with lock:  # the signal arrives while the main thread holds the lock
            handler(signal.SIGTERM, None)
        assert drain.active is True
        assert events == []  # nothing done inside the handler
        loop.run_until_complete(asyncio.sleep(0.2))
        assert events == ["draining"]
        assert stopped == [signal.SIGTERM]  # then uvicorn's own handler, after drain_s
        handler(signal.SIGTERM, None)  # asked twice: stop now
        assert stopped == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)
        loop.close()
