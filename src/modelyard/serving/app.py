"""FastAPI app factory: ``/health``, ``/info`` and the bundle's task routes.

The app is built from a bundle alone. Which routes ``/predict`` offers, and how requests become
tensors, is decided by the bundle's task adapter; this module knows nothing about any project.
"""

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelyard import __version__
from modelyard.core.bundle import Bundle, TensorSpec
from modelyard.projects.registry import serving_adapter_class
from modelyard.serving.adapter import ServingAdapter
from modelyard.serving.runtime import OnnxModel

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str = Field(examples=["ok"])


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


def serving_settings(bundle: Bundle, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The project's ``serving`` config saved in the bundle, updated with explicit overrides."""
    project = bundle.manifest.config.get("project", {})
    settings = dict(project.get("serving", {}) or {})
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings


def create_app(bundle: Bundle, settings: dict[str, Any] | None = None, threads: int = 0) -> FastAPI:
    """Build the service for one verified bundle."""
    manifest = bundle.manifest
    model = OnnxModel(bundle.model_path, threads=threads)
    adapter_class = serving_adapter_class(manifest.task)
    adapter: ServingAdapter = adapter_class(bundle, model, serving_settings(bundle, settings))
    adapter.warm_up()

    app = FastAPI(
        title=f"modelyard: {manifest.name}",
        version=manifest.version,
        description=f"Predictions from the {manifest.project!r} bundle {manifest.version}.",
    )
    app.state.adapter = adapter

    def get_adapter(request: Request) -> ServingAdapter:
        return request.app.state.adapter  # type: ignore[no-any-return]

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness: the process is up and answering."""
        return Health(status="ok")

    @app.get("/info", response_model=Info, tags=["service"])
    def info(served: Annotated[ServingAdapter, Depends(get_adapter)]) -> Info:
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
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, _: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    app.include_router(adapter.router())
    return app
