"""Adaptive micro-batching: concurrent requests share one ONNX Runtime call.

:class:`BatchingModel` has the same ``run(batch) -> batch`` interface as
:class:`~modelyard.serving.runtime.OnnxModel`, so adapters do not know it is there. Each caller
enqueues its rows and waits; one inference thread takes whatever is queued, up to ``max_batch``
rows, runs the model once and hands every caller its slice of every output: a model with more
than one output (a vision model's embedding) gives each caller its own rows of each, from the
same call (:meth:`BatchingModel.run_outputs_async`); a one-output model makes the same single
ONNX Runtime call as before.

Request handlers on the event loop use :meth:`BatchingModel.run_async`, which waits without
holding a thread: the results of one batch reach the loop in a single cross-thread call, however
many requests shared it. Worker threads use :meth:`BatchingModel.run`.

The batch size adapts to the load by itself: while the model runs one batch, new requests queue
up, and the next batch takes all of them (up to ``max_batch`` rows) at once. Under concurrency
(the previous batch served more than one request) a batch also waits up to ``max_wait_ms`` for
company after its first request arrived; a lone client never waits. A request larger than
``max_batch`` rows runs on its own, split into calls of ``max_batch`` rows.
"""

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.serving.runtime import OnnxModel
from modelyard.serving.settings import setting_default

#: Every output of the model for some rows, in the model's order (the prediction first).
Outputs = tuple[np.ndarray, ...]


@dataclass
class _Pending:
    """One caller's rows and where its answer goes: a thread's Future or a loop's future."""

    rows: np.ndarray
    future: "Future[Outputs] | None" = None
    waiter: "asyncio.Future[Outputs] | None" = None
    loop: asyncio.AbstractEventLoop | None = None

    def claim(self) -> bool:
        """Mark as taken; False when the caller has already given up (timeout, disconnect)."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        return self.waiter is not None and not self.waiter.cancelled()


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    requests: int = 0


class BatchingModel:
    def __init__(
        self,
        model: OnnxModel,
        max_batch: int = setting_default("max_batch"),
        max_wait_ms: float = setting_default("max_wait_ms"),
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("micro-batching needs max_batch >= 1 and max_wait_ms >= 0")
        self.model = model
        self.threads = model.threads
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch  # (requests, rows, seconds) after every model call
        self.stats = BatchStats()
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._stopped = False
        self._last_requests = 0
        self._thread = threading.Thread(target=self._serve, name="micro-batcher", daemon=True)
        self._thread.start()

    @property
    def input_name(self) -> str:
        return self.model.input_name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Blocks the calling thread until the rows of ``batch`` have been predicted."""
        return self.run_outputs(batch)[0]

    def run_outputs(self, batch: np.ndarray) -> Outputs:
        """:meth:`run` with every output of the model, each holding the rows of ``batch``."""
        future: Future[Outputs] = Future()
        self._submit(_Pending(_rows(batch), future=future))
        return future.result()

    async def run_async(self, batch: np.ndarray) -> np.ndarray:
        """Awaits the rows of ``batch`` without holding a thread (the event loop's way in)."""
        return (await self.run_outputs_async(batch))[0]

    async def run_outputs_async(self, batch: np.ndarray) -> Outputs:
        """:meth:`run_async` with every output of the model, each holding the rows of ``batch``."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Outputs] = loop.create_future()
        self._submit(_Pending(_rows(batch), waiter=waiter, loop=loop))
        return await waiter

    def _submit(self, pending: _Pending) -> None:
        with self._ready:
            if self._stopped:
                raise RuntimeError("the model is shutting down")
            self._queue.append(pending)
            self._ready.notify()

    def close(self) -> None:
        """Serve what is queued, then stop the inference thread."""
        with self._ready:
            self._stopped = True
            self._ready.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[_Pending]:
        """Wait for work, then gather requests up to ``max_batch`` rows (see the module doc).

        Requests whose caller gave up are dropped here; the ones taken can no longer be
        cancelled half-way.
        """
        with self._ready:
            while True:
                while not self._queue and not self._stopped:
                    self._ready.wait()
                if not self._queue:
                    return []
                first = self._queue.popleft()
                if first.claim():
                    break
            taken = [first]
            rows = first.rows.shape[0]
            wait = self.max_wait_s if self._last_requests > 1 else 0.0
            deadline = time.perf_counter() + wait
            while rows < self.max_batch:
                if not self._queue:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or self._stopped:
                        break
                    self._ready.wait(remaining)
                    continue
                if rows + self._queue[0].rows.shape[0] > self.max_batch:
                    break
                pending = self._queue.popleft()
                if pending.claim():
                    taken.append(pending)
                    rows += pending.rows.shape[0]
            self._last_requests = len(taken)
            return taken

    def _serve(self) -> None:
        while True:
            taken = self._take()
            if not taken:
                return
            try:
                joined = (
                    taken[0].rows
                    if len(taken) == 1
                    else np.concatenate([p.rows for p in taken], axis=0)
                )
                outputs = self._run_in_chunks(joined, len(taken))
            except Exception as exc:  # every waiting caller gets the error
                _deliver(taken, [exc] * len(taken))
                continue
            slices: list[Outputs | BaseException] = []
            offset = 0
            for pending in taken:
                size = pending.rows.shape[0]
                slices.append(tuple(output[offset : offset + size] for output in outputs))
                offset += size
            _deliver(taken, slices)
            self.stats.batches += 1
            self.stats.rows += offset
            self.stats.requests += len(taken)

    def _run_in_chunks(self, rows: np.ndarray, requests: int) -> Outputs:
        """One call per ``max_batch`` rows: a large request is split, which bounds ONNX Runtime's
        working memory (activations grow with the batch); benchmarks/serving.py shows bulk
        requests still at the in-process limit."""
        outputs = []
        for start in range(0, rows.shape[0], self.max_batch):
            chunk = rows[start : start + self.max_batch]
            began = time.perf_counter()
            outputs.append(self.model.run_outputs(chunk))
            if self.on_batch is not None:
                self.on_batch(requests, chunk.shape[0], time.perf_counter() - began)
        if len(outputs) == 1:
            return outputs[0]
        return tuple(np.concatenate(parts, axis=0) for parts in zip(*outputs, strict=True))


def _rows(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch, dtype=np.float32)


def _deliver(taken: list[_Pending], results: list[Outputs | BaseException]) -> None:
    """Hand every caller its result: threads directly, each event loop in one call."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outputs], Any]]] = {}
    for pending, result in zip(taken, results, strict=True):
        if pending.future is not None:
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        elif pending.waiter is not None and pending.loop is not None:
            by_loop.setdefault(pending.loop, []).append((pending.waiter, result))
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, answers)


def _resolve(answers: list[tuple["asyncio.Future[Outputs]", Any]]) -> None:
    """On the event loop: complete the futures whose callers are still waiting."""
    for waiter, result in answers:
        if waiter.done():  # cancelled meanwhile (timeout, client gone)
            continue
        if isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)
