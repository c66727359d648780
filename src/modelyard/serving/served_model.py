"""One loaded model version as a server worker serves it, and what a replacement may change.

A :class:`ServedModel` holds everything that answers a prediction: the verified bundle, its ONNX
Runtime session behind the micro-batcher, the task adapter and the adapter's routes. It is built
whole (:func:`load_served_model`) before anything can see it and never changed afterwards, so a
worker that replaces its model (``serve --follow``, :mod:`.model_swap`) swaps one reference: a
request is answered entirely by the old object or entirely by the new one.

What a replacement may change is decided here (:func:`contract_change`): the weights, the
metrics, the version and the provenance. The routes were built, and the OpenAPI schema
published, for the first version; a version whose project, task, model name, task facts
(``/info``'s ``details``: window, classes, features, limits) or request and response schemas
differ cannot be served by them, and is refused (it needs a new deployment).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.utils import get_openapi

from modelyard.core.bundle import Bundle
from modelyard.serving.adapter import ModelRunner, ServingAdapter, build_adapter
from modelyard.serving.batching import BatchingModel
from modelyard.serving.metrics import ServiceMetrics
from modelyard.serving.runtime import OnnxModel, ThreadSizing, open_served_model, thread_sizing
from modelyard.serving.settings import ServerSettings

#: OpenAPI keys that may differ between versions: examples come from each bundle's own facts.
_EXAMPLE_KEYS = frozenset({"example", "examples"})


@dataclass
class InFlight:
    """Requests a model is answering now; counted on the event loop, read by the swap thread
    (which closes the model's batcher only once this is zero)."""

    count: int = 0


@dataclass(frozen=True)
class ServedModel:
    bundle: Bundle
    adapter: ServingAdapter
    router: APIRouter
    onnx: OnnxModel
    batcher: BatchingModel | None
    contract: Mapping[str, Any]
    threads: ThreadSizing
    in_flight: InFlight = field(default_factory=InFlight, compare=False)

    @property
    def name(self) -> str:
        return self.bundle.manifest.name

    @property
    def version(self) -> str:
        return self.bundle.manifest.version

    def warm_up(self, times: int) -> None:
        """Predict the example ``times`` times (at least once) before any client sees the model."""
        for _ in range(max(1, times)):
            self.adapter.warm_up()

    def close(self) -> None:
        """Serve what is queued, stop the micro-batcher's thread, free the ONNX session."""
        if self.batcher is not None:
            self.batcher.close()
        self.onnx.close()


def load_served_model(
    bundle: Bundle,
    settings: ServerSettings,
    overrides: dict[str, Any] | None,
    metrics: ServiceMetrics,
) -> ServedModel:
    """Open ``bundle`` as a worker serves it: the signature policy and the tensors checked
    (:func:`~.runtime.open_served_model`), the micro-batcher started, the adapter and its
    routes built."""
    threads = thread_sizing(settings.threads, settings.workers)
    onnx = open_served_model(bundle, settings, threads.threads)
    batcher: BatchingModel | None = None
    runner: ModelRunner = onnx
    if settings.batching:
        batcher = BatchingModel(
            onnx, settings.max_batch, settings.max_wait_ms, metrics.observe_batch
        )
        runner = batcher
    try:
        adapter = build_adapter(bundle, runner, overrides)
        router = adapter.router()
    except Exception:
        if batcher is not None:
            batcher.close()
        raise
    contract = serving_contract(adapter, router)
    return ServedModel(bundle, adapter, router, onnx, batcher, contract, threads)


def serving_contract(adapter: ServingAdapter, router: APIRouter) -> dict[str, Any]:
    """What clients and the built app rely on: the facts a replacement must keep."""
    manifest = adapter.bundle.manifest
    api = get_openapi(title="contract", version="0", routes=router.routes)
    return {
        "project": manifest.project,
        "task": manifest.task,
        "model name": manifest.name,
        "task facts": adapter.task_info(),
        "request and response schemas": _without_examples(api),
    }


def contract_change(served: ServedModel, candidate: ServedModel) -> str | None:
    """Why ``candidate`` cannot replace ``served`` (the first fact that differs), else None."""
    for fact, value in served.contract.items():
        other = candidate.contract.get(fact)
        if other == value:
            continue
        if isinstance(value, dict) and isinstance(other, dict):
            keys = sorted(k for k in value.keys() | other.keys() if value.get(k) != other.get(k))
            return f"{fact} changed: {', '.join(map(str, keys))}"
        return f"{fact} changed: {value!r} -> {other!r}"
    return None


def _without_examples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_examples(v) for k, v in value.items() if k not in _EXAMPLE_KEYS}
    if isinstance(value, list):
        return [_without_examples(v) for v in value]
    return value
