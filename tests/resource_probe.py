"""Measure a served process from the outside: its memory and how fast ``/health`` answers.

For resource tests against a real server subprocess (see ``modelyard.serving.server_process``):

* :func:`server_pid` finds the process serving a port on this machine;
* :func:`memory` reads ``VmRSS`` and ``VmHWM`` (the peak resident set) from ``/proc``, and
  :func:`reset_peak` sets the peak back to the current size (``clear_refs``), so that the peak
  of an attack is measured against the idle server instead of against its start-up;
* :class:`HealthSampler` asks ``/health`` over and over in a thread while the test sends
  something heavy, and keeps every latency: a server whose event loop is blocked shows it there.

Linux only (``/proc``); the tests that use it run where the server runs.
"""

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

PROC = Path("/proc")


def server_pid(port: int) -> int:
    """The process whose command line serves ``--port port`` (``modelyard serve``)."""
    wanted = f"--port\0{port}\0".encode()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if b"serve\0" in command and wanted in command + b"\0":
            return int(entry.name)
    raise LookupError(f"no process serving port {port}")


@dataclass(frozen=True)
class Memory:
    """Resident set now and at its peak, in MiB."""

    rss_mib: float
    peak_mib: float


def memory(pid: int) -> Memory:
    values = {}
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024  # kB
    return Memory(rss_mib=values["VmRSS"], peak_mib=values["VmHWM"])


def reset_peak(pid: int) -> bool:
    """Set ``VmHWM`` back to the current ``VmRSS``; False where the kernel does not allow it
    (then the peak still counts from the process's start)."""
    try:
        (PROC / str(pid) / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class HealthSampler:
    """``GET url/health`` every ``interval_s`` in a thread, from entering to leaving the block.

    ``latencies_s`` holds one entry per answer; a request that gets no answer within
    ``timeout_s`` counts as ``timeout_s``, so a blocked server cannot look fast.
    """

    url: str
    interval_s: float = 0.02
    timeout_s: float = 5.0
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "HealthSampler":
        self._thread = threading.Thread(target=self._run, name="health-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 1.0)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get("/health").status_code
                    if status != 200:
                        self.failures.append(f"status {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies_s.append(time.perf_counter() - started)
                self._stop.wait(self.interval_s)

    def slow(self, limit_s: float) -> list[float]:
        """The latencies above ``limit_s``."""
        return [t for t in self.latencies_s if t > limit_s]
