"""One worker's service: the model behind its micro-batcher, the task adapter, the metrics, the
prediction log and the worker's readiness, from start-up (warm-up) to shutdown (flush)."""

import asyncio
import gc
import logging
import os
from typing import Any

from modelyard.core.bundle import Bundle
from modelyard.serving.adapter import ModelRunner, ServingAdapter, build_adapter
from modelyard.serving.batching import BatchingModel
from modelyard.serving.context import RequestContext
from modelyard.serving.draining import Drain
from modelyard.serving.metrics import ServiceMetrics, mark_worker_dead
from modelyard.serving.prediction_log import PredictionLog, PredictionRecord
from modelyard.serving.runtime import intra_op_threads, open_served_model
from modelyard.serving.settings import ServerSettings

log = logging.getLogger("modelyard.serving")
STATS_INTERVAL_S = 1.0
GC_GEN0_THRESHOLD = 20_000


class Service:
    """Everything one worker holds: model, adapter, metrics, prediction log, readiness."""

    def __init__(
        self, bundle: Bundle, overrides: dict[str, Any] | None, settings: ServerSettings
    ) -> None:
        self.bundle = bundle
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.metrics.set_model_info(**model_info(bundle, settings.quantized))
        threads = intra_op_threads(settings.threads, settings.workers)
        onnx = open_served_model(bundle, settings, threads)
        self.batcher: BatchingModel | None = None
        runner: ModelRunner = onnx
        if settings.batching:
            self.batcher = BatchingModel(
                onnx, settings.max_batch, settings.max_wait_ms, self.metrics.observe_batch
            )
            runner = self.batcher
        self.adapter: ServingAdapter = build_adapter(bundle, runner, overrides)
        self.log: PredictionLog | None = None
        if settings.prediction_log:
            self.log = PredictionLog(
                settings.prediction_log,
                settings.resolved_spool_dir(),
                batch_size=settings.log_batch_size,
                flush_interval_s=settings.log_flush_interval_s,
                model=bundle.manifest.name,
            )
        self.ready = False
        self.drain = Drain()

    def start_draining(self) -> None:
        """A stop was asked for: no longer ready; responses close their connections."""
        self.ready = False
        self.metrics.ready.set(0)
        log.info("draining for %.1f s before shutting down", self.settings.drain_s)

    def start(self) -> None:
        if self.log is not None:
            self.log.start()
        for _ in range(max(1, self.settings.warmup_requests)):
            self.adapter.warm_up()
        settle_garbage_collector()
        self.ready = True
        self.metrics.ready.set(1)
        self.update_stats()

    def stop(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        if self.batcher is not None:
            self.batcher.close()
        if self.log is not None:
            self.log.close(timeout_s=self.settings.shutdown_timeout_s)
        self.update_stats()
        mark_worker_dead(os.getpid())

    def update_stats(self) -> None:
        if self.log is not None:
            self.metrics.update_log(self.log.stats)
        self.metrics.update_memory()

    def record(self, context: RequestContext, route: str, seconds: float) -> None:
        """After a 200 with a prediction: metrics of its values and a prediction-log row."""
        event = context.prediction
        if event is None:
            return
        self.metrics.observe_prediction(event)
        if self.log is not None:
            manifest = self.bundle.manifest
            self.log.record(
                PredictionRecord(
                    request_id=context.request_id,
                    server_request_id=context.server_request_id,
                    model=manifest.name,
                    version=manifest.version,
                    route=route,
                    status=200,
                    latency_ms=round(seconds * 1000, 3),
                    inputs=event.inputs,
                    outputs=event.outputs,
                )
            )


def model_info(bundle: Bundle, quantized: bool) -> dict[str, Any]:
    """The labels of ``modelyard_model_info`` for ``bundle``: the served file's sha256 is the
    INT8 model's when that one is served."""
    manifest = bundle.manifest
    int8 = manifest.quantization if quantized else None
    return {
        "model": manifest.name,
        "version": manifest.version,
        "sha256": manifest.sha256 if int8 is None else int8.sha256,
        "quantized": int8 is not None,
    }


def settle_garbage_collector() -> None:
    """After start-up: freeze what exists (modules, model, app) out of the collector's sight and
    collect the youngest generation less often.

    Every request allocates many short-lived containers and almost no cycles; with the default
    thresholds gen-0 collections, and the full ones that rescan the long-lived start-up objects,
    add pauses that show up as a latency tail under load (seen in probe runs of the serving
    benchmark's load generator).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


async def refresh_stats(service: Service) -> None:
    """Keep the prediction-log and memory gauges current between scrapes."""
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        service.update_stats()
