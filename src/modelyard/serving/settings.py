"""How a server runs: workers, threads, micro-batching, limits, the prediction log, logging.

These are properties of a deployment, not of a model, so they come from ``modelyard serve``'s
options (or the ``MODELYARD_SERVE_SETTINGS`` JSON handed to worker processes), never from the
bundle. Task-specific request limits (series length, rows, upload size) stay in the bundle's
``serving`` config and are overridden separately.

:class:`ServerSettings` is the one definition of every default: ``modelyard serve``'s options and
the micro-batcher read theirs from it (:func:`setting_default`); nothing else (no Hydra config)
holds serving defaults.
"""

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.core.errors import ConfigError
from modelyard.serving.registry_info import RegistryBlock

#: Environment variable carrying the settings (JSON) to uvicorn's worker processes.
SETTINGS_ENV = "MODELYARD_SERVE_SETTINGS"


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle: str = Field(default="", description="Bundle directory (resolved, not a models:/ ref).")
    overrides: dict[str, int | float | str | None] = Field(
        default_factory=dict, description="Task settings replacing the bundle's serving config."
    )
    bundle_key_file: str | None = Field(
        default=None, description="Key file verifying bundle signatures (HMAC-SHA256)."
    )
    require_signature: bool = Field(
        default=False, description="Refuse a bundle not signed with bundle_key_file's key."
    )
    follow_file: str | None = Field(
        default=None,
        description="File saying which bundle of a followed registry alias to serve (written by "
        "`serve --follow`, see serving/model_swap.py); None = the bundle is served unchanged.",
    )
    registry: RegistryBlock | None = Field(
        default=None,
        description="/info's registry block: the registered version served (models:/ only).",
    )
    follow_interval_s: float = Field(
        default=10.0, gt=0.0, le=3600.0, description="Seconds between looks at the followed alias."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # 0 = one thread per core divided among the workers (see runtime.intra_op_threads)
    threads: int = Field(default=0, ge=0, le=256)
    batching: bool = True
    max_batch: int = Field(default=256, ge=1)
    max_wait_ms: float = Field(default=1.0, ge=0.0, le=1000.0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    request_timeout_s: float = Field(default=30.0, gt=0.0)
    max_concurrency: int = Field(default=512, ge=1)
    retry_after_s: int = Field(default=1, ge=1)
    quantized: bool = False
    prediction_log: str | None = Field(
        default=None, description="SQLAlchemy URL of the prediction log; None = not logged."
    )
    spool_dir: Path | None = Field(
        default=None, description="Where unwritten log records wait (default beside the DB)."
    )
    # what a kill -9 can lose is about one flush interval of predictions (docs/serving.md)
    log_flush_interval_s: float = Field(default=0.25, gt=0.0, le=60.0)
    log_batch_size: int = Field(default=500, ge=1, le=50_000)
    cors_origins: list[str] = Field(default_factory=list, description="Empty = CORS off.")
    # access control and exposure (docs/security.md)
    api_key_file: Path | None = Field(default=None, description="API keys, one per line.")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding API keys (read if set)."
    )
    metrics_public: bool = Field(default=False, description="/metrics needs no API key.")
    # '*' here (an app built in-process); `modelyard serve` derives its default from `host`
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["*"], description="Host header values served ('*' = any)."
    )
    docs: bool = Field(default=True, description="Serve /docs and /redoc.")
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    proxy_headers: bool = Field(
        default=True, description="Trust X-Forwarded-For/-Proto from forwarded_allow_ips."
    )
    forwarded_allow_ips: str = "127.0.0.1"
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = True
    warmup_requests: int = Field(default=3, ge=0)
    shutdown_timeout_s: float = Field(default=20.0, gt=0.0)
    # after SIGTERM: keep serving (not ready, Connection: close) this long, then shut down
    drain_s: float = Field(default=2.0, ge=0.0, le=300.0)

    def to_env(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls) -> "ServerSettings":
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise ConfigError(f"{SETTINGS_ENV} is not set: start workers with `modelyard serve`")
        try:
            return cls.model_validate(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f"{SETTINGS_ENV} holds invalid settings: {exc}") from exc

    def resolved_spool_dir(self) -> Path:
        """Spool directory: the given one, beside a SQLite file, or under the working dir.

        Each log spools into its own subdirectory of it, named after its database and model
        (see :mod:`modelyard.serving.spool`), so several servers may share this directory."""
        if self.spool_dir is not None:
            return self.spool_dir
        url = self.prediction_log or ""
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            return Path(url.removeprefix("sqlite:///")).parent / "prediction-spool"
        from modelyard.core.runs import default_workdir

        return default_workdir() / "prediction-spool"


def build_settings(**values: object) -> ServerSettings:
    """Validate CLI values into settings, with one precise error for a bad value."""
    try:
        return ServerSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"serve: {where}: {first['msg']}") from exc


def setting_default(name: str) -> Any:
    """:class:`ServerSettings`' default for field ``name``, for the CLI's options and the
    micro-batcher, so that a default is written down once."""
    return ServerSettings.model_fields[name].get_default(call_default_factory=True)
