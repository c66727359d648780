"""One worker's service: the model behind its micro-batcher, the task adapter, the metrics, the
prediction log and the worker's readiness, from start-up (warm-up) to shutdown (flush)."""

import asyncio
import gc
import logging
import os
from pathlib import Path
from typing import Any

from modelyard.core.bundle import Bundle, load_bundle
from modelyard.serving.context import RequestContext
from modelyard.serving.draining import Drain
from modelyard.serving.metrics import ServiceMetrics, mark_worker_dead
from modelyard.serving.model_swap import Follower, ModelSwitch
from modelyard.serving.prediction_log import PredictionLog, PredictionRecord
from modelyard.serving.served_model import ServedModel, load_served_model
from modelyard.serving.settings import ServerSettings

log = logging.getLogger("modelyard.serving")
STATS_INTERVAL_S = 1.0
GC_GEN0_THRESHOLD = 20_000


class Service:
    """Everything one worker holds: model, adapter, metrics, prediction log, readiness.

    The model is reached through :attr:`switch` (:mod:`.model_swap`): the one the worker started
    with, or a later version of a followed registry alias (``serve --follow``)."""

    def __init__(
        self, bundle: Bundle, overrides: dict[str, Any] | None, settings: ServerSettings
    ) -> None:
        self.settings = settings
        self.overrides = overrides
        self.metrics = ServiceMetrics()
        self.switch = ModelSwitch(load_served_model(bundle, settings, overrides, self.metrics))
        self.follower: Follower | None = None
        if settings.follow_file:
            self.follower = Follower(
                Path(settings.follow_file),
                self.switch,
                self.load,
                self.on_swap,
                interval_s=settings.follow_interval_s,
                drain_timeout_s=settings.request_timeout_s + settings.shutdown_timeout_s,
            )
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

    @property
    def served(self) -> ServedModel:
        """The model answering now (read it once per use: a swap may replace it)."""
        return self.switch.current

    def load(self, path: Path) -> ServedModel:
        """Open and warm up the bundle at ``path`` beside the served model (``--follow``)."""
        served = load_served_model(load_bundle(path), self.settings, self.overrides, self.metrics)
        try:
            served.warm_up(self.settings.warmup_requests)
        except Exception:
            served.close()
            raise
        return served

    def on_swap(self, served: ServedModel, result: str) -> None:
        """After a followed version was swapped in or refused: the metrics say so."""
        self.metrics.model_swaps.labels(result).inc()
        self.show_model(served)

    def show_model(self, served: ServedModel) -> None:
        self.metrics.set_model_info(**model_info(served.bundle, self.settings.quantized))

    def start_draining(self) -> None:
        """A stop was asked for: no longer ready; responses close their connections."""
        self.ready = False
        self.metrics.ready.set(0)
        log.info("draining for %.1f s before shutting down", self.settings.drain_s)

    def start(self) -> None:
        if self.log is not None:
            self.log.start()
        self.served.warm_up(self.settings.warmup_requests)
        if self.follower is not None:  # a worker restarted later takes the followed version now
            self.follower.check()
        self.show_model(self.served)
        log.info("ONNX Runtime intra-op threads: %s", self.served.threads.detail)
        settle_garbage_collector()
        self.ready = True
        self.metrics.ready.set(1)
        self.update_stats()
        if self.follower is not None:
            self.follower.start()

    def stop(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        if self.follower is not None:
            self.follower.stop()
        self.served.close()
        if self.log is not None:
            self.log.close(timeout_s=self.settings.shutdown_timeout_s)
        self.update_stats()
        mark_worker_dead(os.getpid())

    def update_stats(self) -> None:
        if self.log is not None:
            self.metrics.update_log(self.log.stats)
        self.metrics.update_memory()

    def record(self, context: RequestContext, route: str, seconds: float) -> None:
        """After a 200 with a prediction: metrics of its values and a prediction-log row, with
        the version of the model that answered it."""
        event = context.prediction
        if event is None:
            return
        self.metrics.observe_prediction(event)
        if self.log is not None:
            manifest = self.served.bundle.manifest
            self.log.record(
                PredictionRecord(
                    request_id=context.request_id,
                    server_request_id=context.server_request_id,
                    model=manifest.name,
                    version=context.model_version or manifest.version,
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
