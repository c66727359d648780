"""FastAPI app factory: probes, ``/info``, ``/metrics`` and the bundle's task routes.

The app is built from a bundle alone. Which routes ``/predict`` offers, and how requests become
tensors, is decided by the bundle's task adapter; this module knows nothing about any project.
Around the routes: the service middleware (request ids, limits, metrics, access log), the
allowed-hosts check, CORS and API keys (``docs/security.md``), the micro-batcher in front of
ONNX Runtime and the prediction log (see ``docs/serving.md``).

Start-up (the lifespan) warms the model up before the worker accepts traffic; ``/ready`` answers
200 from then on until shutdown begins, while ``/health`` only says the process is alive.
Shutdown stops the batcher after the last request and flushes the prediction log.

The task's routes answer with the worker's current model (:class:`~.model_swap.ServedRoutes`):
the bundle given, or a later version of a followed registry alias (``serve --follow``), which
``/info``, ``/ready`` and ``modelyard_model_info`` then report.

With a prediction log, ``POST /feedback`` takes the ground truth of logged predictions
(:mod:`.feedback_api`) into a feedback log beside it, started and flushed with it.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelyard import __version__
from modelyard.core.bundle import Bundle, TensorSpec
from modelyard.core.bundle_integrity import Trust
from modelyard.serving.adapter import ServingAdapter
from modelyard.serving.api_keys import load_keys
from modelyard.serving.auth import ApiKeyMiddleware, document_auth, exempt_paths
from modelyard.serving.context import PREDICTION_ID_HEADER
from modelyard.serving.docs_pages import add_docs_pages
from modelyard.serving.draining import install_drain_on_sigterm
from modelyard.serving.examples_api import examples_router
from modelyard.serving.feedback import FeedbackDesk, FeedbackLog, TruthCheck
from modelyard.serving.feedback_api import FeedbackParser, feedback_router
from modelyard.serving.hosts import AllowedHosts, HostCheckMiddleware
from modelyard.serving.http_checks import validation_error_body
from modelyard.serving.metrics import CONTENT_TYPE
from modelyard.serving.middleware import ServiceMiddleware
from modelyard.serving.model_swap import FollowStatus, ServedRoutes
from modelyard.serving.registry_info import RegistryBlock
from modelyard.serving.service import Service, refresh_stats
from modelyard.serving.settings import ServerSettings


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    model: str
    version: str
    quantized: bool
    prediction_log: bool = Field(description="Predictions are being logged.")
    threads: int = Field(description="This worker's ONNX Runtime intra-op threads.")
    threads_from: str = Field(
        description="Where that number came from: option (--threads), cgroup (a container CPU "
        "quota below the CPU affinity) or affinity.",
        examples=["cgroup"],
    )


class Info(BaseModel):
    """A summary of the served bundle's manifest."""

    project: str = Field(examples=["nilm"])
    task: str = Field(examples=["nilm"])
    name: str = Field(examples=["nilm-seq2point"])
    version: str = Field(examples=["20261122-120000"])
    created_at: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metrics: dict[str, Any]
    git_commit: str | None
    data_fingerprint: str | None
    modelyard_version: str
    details: dict[str, Any] = Field(description="Task-specific facts (window, appliances, limits).")
    integrity: Trust = Field(description="What was verified of the bundle: digest, signature.")
    follow: FollowStatus | None = Field(
        default=None, description="The followed registry alias (serve --follow), else null."
    )
    registry: RegistryBlock | None = Field(
        default=None,
        description="The registered version served and the promotion gates it passed, when "
        "served from models:/NAME@ALIAS (or models:/NAME/VERSION); null for a bundle directory.",
    )


def create_app(
    bundle: Bundle,
    overrides: dict[str, Any] | None = None,
    settings: ServerSettings | None = None,
) -> FastAPI:
    """Build the service for one verified bundle.

    ``overrides`` replace the bundle's task settings (e.g. ``max_length``); ``settings`` are the
    server's (batching, limits, prediction log); the defaults log nothing.
    """
    settings = settings or ServerSettings()
    service = Service(bundle, overrides, settings)
    manifest = bundle.manifest

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.switch.bind(asyncio.get_running_loop())
        await asyncio.to_thread(service.start)
        install_drain_on_sigterm(
            service.drain, asyncio.get_running_loop(), settings.drain_s, service.start_draining
        )
        updater = asyncio.create_task(refresh_stats(service))
        try:
            async with running(feedback, settings.shutdown_timeout_s):
                yield
        finally:
            updater.cancel()
            await asyncio.to_thread(service.stop)

    app = FastAPI(
        title=f"modelyard: {manifest.name}",
        version=manifest.version,
        description=f"Predictions from the {manifest.project!r} bundle {manifest.version}.",
        lifespan=lifespan,
        docs_url=None,  # local pages instead (serving/docs_pages.py), or none
        redoc_url=None,
    )
    app.state.adapter = service.served.adapter  # the first model's; see service.served
    app.state.service = service
    feedback = feedback_log(service, settings, truth_check(app))  # its route after the task's

    # Probes and facts are async: answered on the event loop, never queued behind the thread pool.
    def get_adapter(request: Request) -> ServingAdapter:
        return request.app.state.service.served.adapter  # type: ignore[no-any-return]

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        """Liveness: the process is up and answering."""
        return Health(status="ok")

    @app.get(
        "/ready",
        response_model=Readiness,
        tags=["service"],
        responses={503: {"description": "Starting up or shutting down", "model": Readiness}},
    )
    async def ready() -> JSONResponse:
        """Readiness: the model is loaded and warmed up and the worker is not shutting down."""
        body = Readiness(
            ready=service.ready,
            model=service.served.name,
            version=service.served.version,
            quantized=settings.quantized,
            prediction_log=service.log is not None,
            threads=service.served.threads.threads,
            threads_from=service.served.threads.source,
        )
        return JSONResponse(body.model_dump(), status_code=200 if service.ready else 503)

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text format), all workers together."""
        service.update_stats()
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/info", response_model=Info, tags=["service"])
    async def info(served: Annotated[ServingAdapter, Depends(get_adapter)]) -> Info:
        """What is being served: model, version, schema, metrics and provenance."""
        m = served.bundle.manifest
        return Info(
            project=m.project,
            task=m.task,
            name=m.name,
            version=m.version,
            created_at=m.created_at.isoformat(),
            sha256=m.sha256,
            inputs=m.inputs,
            outputs=m.outputs,
            metrics=m.metrics,
            git_commit=m.git_commit,
            data_fingerprint=m.data_fingerprint,
            modelyard_version=__version__,
            details=served.info(),
            integrity=served.bundle.trust,
            follow=None if service.follower is None else service.follower.status,
            registry=registry_block(service),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        """The first errors only, short, without the inputs: a body can hold millions."""
        return JSONResponse(status_code=422, content=validation_error_body(exc.errors()))

    # requests reach the current model's routes first; the first model's stay for the schema
    app.router.routes.insert(0, ServedRoutes(service.switch))
    add_bundle_routes(app, service)
    add_feedback_route(app, service, feedback)
    document_prediction_id(app)
    if settings.docs:
        add_docs_pages(app)
    # from the inside out: API keys, CORS (preflights answered before keys are asked for, and
    # refusals readable by the page), allowed hosts, the service middleware (outermost)
    keys = load_keys(settings.api_key_file, settings.api_key_env)
    if keys is not None:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=keys,
            metrics=service.metrics,
            metrics_public=settings.metrics_public,
        )
        document_auth(app, settings.metrics_public)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", PREDICTION_ID_HEADER],
        )
    allowed = AllowedHosts(settings.allowed_hosts)
    if not allowed.any:
        app.add_middleware(
            HostCheckMiddleware,
            allowed=allowed,
            exempt=exempt_paths(settings.metrics_public),
            metrics=service.metrics,
        )
    # added last = outermost: it sees every response, refusals and errors included
    app.add_middleware(
        ServiceMiddleware,
        settings=settings,
        metrics=service.metrics,
        on_prediction=service.record,
        drain=service.drain,
    )
    return app


def registry_block(service: Service) -> RegistryBlock | None:
    """The registry block of the version served now: the followed alias's latest offer once it
    is served, else the one ``serve`` resolved, while its version is still served."""
    served = service.served.version
    offered = None if service.follower is None else service.follower.registry
    for block in (offered, service.settings.registry):
        if block is not None and block.bundle_version in (None, served):
            return block
    return None


def add_bundle_routes(app: FastAPI, service: Service) -> None:
    """The task's routes (of the first model, for the schema) and the bundle's examples."""
    app.include_router(service.served.router)
    app.include_router(examples_router())


def truth_check(app: FastAPI) -> TruthCheck:
    """The served adapter's ``truth_mismatch``: the adapter of the version served now."""

    def check(truth: dict[str, Any], inputs: Any, outputs: Any) -> str | None:
        adapter: ServingAdapter = app.state.service.served.adapter
        return adapter.truth_mismatch(truth, inputs, outputs)

    return check


def feedback_log(
    service: Service, settings: ServerSettings, check: TruthCheck
) -> FeedbackLog | None:
    """The feedback log beside the prediction log (same database, spool directory and batching),
    checking late truths with the served adapter; None without a prediction log or when the
    family takes no feedback."""
    if service.log is None or not settings.prediction_log:
        return None
    if service.served.adapter.truth_model() is None:
        return None
    return FeedbackLog(
        settings.prediction_log,
        settings.resolved_spool_dir(),
        check=check,
        batch_size=settings.log_batch_size,
        flush_interval_s=settings.log_flush_interval_s,
        model=service.served.bundle.manifest.name,
    )


def add_feedback_route(app: FastAPI, service: Service, feedback: FeedbackLog | None) -> None:
    """``POST /feedback`` into ``feedback``, where there is a feedback log."""
    if feedback is not None and service.log is not None:
        desk = FeedbackDesk(feedback, service.log)
        parser = FeedbackParser(service.served.adapter)
        app.include_router(feedback_router(parser, desk, service.metrics))


@contextlib.asynccontextmanager
async def running(log: FeedbackLog | None, timeout_s: float) -> AsyncIterator[None]:
    """``log``'s writer running while the server serves; what it holds flushed (or spooled)
    when it stops, after the prediction log's last records were handed over."""
    if log is None:
        yield
        return
    log.start()
    try:
        yield
    finally:
        await asyncio.to_thread(log.close, timeout_s)


def document_prediction_id(app: FastAPI) -> None:
    """Declare the ``X-Prediction-ID`` header of ``/predict``'s answer in the OpenAPI schema."""
    build = app.openapi
    header = {
        "description": "The prediction's id: its prediction-log key, for POST /feedback.",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    }

    def openapi() -> dict[str, Any]:
        schema = build()
        answer = schema.get("paths", {}).get("/predict", {}).get("post", {})
        ok = answer.get("responses", {}).get("200")
        if ok is not None:
            ok.setdefault("headers", {})[PREDICTION_ID_HEADER] = header
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
