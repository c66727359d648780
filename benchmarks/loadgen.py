"""A lean closed-loop HTTP/1.1 load generator: N keep-alive connections, one request at a time each.

Requests are serialised once up front and responses are parsed only as far as the status line and
Content-Length, so the generator spends little CPU per request; its own CPU time is measured and
reported with the results, to show it is not what limits the server. Run it in its own process
(``python benchmarks/loadgen.py``, JSON on stdout) so it can be pinned to its own core.
"""

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class LoadResult:
    clients: int
    seconds: float
    requests: int
    errors: int
    statuses: dict[str, int]
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_s: float
    client_cpu_share: float  # of one core, over the measured interval


def build_request(
    host: str, port: int, path: str, body: bytes, content_type: str, api_key: str | None = None
) -> bytes:
    auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"{auth}Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


class _Window:
    """The measured interval: it opens once every client has had an answer (the system is in its
    steady state, however long one request takes) and ``warmup`` has passed, and lasts ``seconds``.
    Only answers completed inside it count."""

    def __init__(self, clients: int, warmup_s: float, seconds: float) -> None:
        self.waiting = clients
        self.earliest = time.perf_counter() + warmup_s
        self.seconds = seconds
        self.opened = asyncio.get_running_loop().create_future()

    def first_answer(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            delay = max(0.0, self.earliest - time.perf_counter())
            asyncio.get_running_loop().call_later(delay, self._open)

    def _open(self) -> None:
        if not self.opened.done():
            self.opened.set_result(time.perf_counter())


async def _client(
    host: str,
    port: int,
    request: bytes,
    window: _Window,
    completions: list[tuple[float, float, int]],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    answered = False
    try:
        while True:
            started = time.perf_counter()
            writer.write(request)
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                status = 0  # the connection broke: counted as an error, then reconnect
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            completions.append((started, time.perf_counter(), status))
            if not answered:
                answered = True
                window.first_answer()
    finally:
        writer.close()


async def run_load(
    host: str,
    port: int,
    request: bytes,
    clients: int,
    seconds: float,
    warmup_s: float,
) -> LoadResult:
    completions: list[tuple[float, float, int]] = []
    window = _Window(clients, warmup_s, seconds)
    tasks = [
        asyncio.create_task(_client(host, port, request, window, completions))
        for _ in range(clients)
    ]
    opened = await window.opened
    cpu_before = time.process_time()
    await asyncio.sleep(seconds)
    closed = time.perf_counter()
    cpu = time.process_time() - cpu_before
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    inside = [(end - start, status) for start, end, status in completions if opened <= end < closed]
    statuses: dict[str, int] = {}
    for _, status in inside:
        key = str(status) if status else "disconnected"
        statuses[key] = statuses.get(key, 0) + 1
    ok = np.asarray([d for d, status in inside if status == 200] or [0.0]) * 1000
    elapsed = closed - opened
    answered = statuses.get("200", 0)
    return LoadResult(
        clients=clients,
        seconds=round(elapsed, 2),
        requests=answered,
        errors=sum(v for k, v in statuses.items() if k != "200"),
        statuses=statuses,
        requests_per_s=round(answered / elapsed, 1),
        p50_ms=round(float(np.percentile(ok, 50)), 2),
        p99_ms=round(float(np.percentile(ok, 99)), 2),
        max_ms=round(float(ok.max()), 2),
        client_cpu_s=round(cpu, 2),
        client_cpu_share=round(cpu / elapsed, 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--body", type=Path, required=True, help="File with the request body")
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--cpu", type=int, default=None, help="Pin this process to one core")
    parser.add_argument("--api-key", default=None, help="Send 'Authorization: Bearer KEY'")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    host = "127.0.0.1"
    request = build_request(
        host, args.port, args.path, args.body.read_bytes(), args.content_type, args.api_key
    )
    result = asyncio.run(
        run_load(host, args.port, request, args.clients, args.seconds, args.warmup)
    )
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
