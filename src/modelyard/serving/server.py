"""Run the service under uvicorn: one process, or several workers sharing the port.

With one worker the app is built here and handed to uvicorn. With several, uvicorn's supervisor
starts each worker as a fresh process that builds its own app from the settings in the
environment (:func:`app_from_environment`); the supervisor never loads the model. Metrics are then
shared through ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory for this server, removed at exit).

uvicorn's own graceful shutdown does the rest: on SIGTERM or SIGINT it stops accepting
connections, lets requests in flight finish (up to ``shutdown_timeout_s``), then runs the app's
shutdown, which flushes the prediction log.

TLS (``--ssl-certfile``/``--ssl-keyfile``) and the trust in a reverse proxy's ``X-Forwarded-*``
headers (``--proxy-headers``, ``--forwarded-allow-ips``) are uvicorn's; what is exposed is
checked first (:func:`~modelyard.serving.exposure.check_exposure`, ``docs/security.md``).
"""

import logging.config
import os
import shutil
import tempfile
from pathlib import Path

from fastapi import FastAPI

from modelyard.serving.exposure import check_exposure, ssl_password
from modelyard.serving.json_logging import log_config
from modelyard.serving.metrics import MULTIPROC_ENV
from modelyard.serving.settings import SETTINGS_ENV, ServerSettings
from modelyard.serving.spool import check_writable

FACTORY = "modelyard.serving.server:app_from_environment"


def app_from_environment() -> FastAPI:
    """uvicorn factory for worker processes: the settings come from ``SETTINGS_ENV``."""
    from modelyard.core.bundle import load_bundle
    from modelyard.serving.app import create_app

    settings = ServerSettings.from_env()
    return create_app(load_bundle(Path(settings.bundle)), settings.overrides, settings)


def serve(settings: ServerSettings) -> None:
    """Serve until stopped (blocks)."""
    import uvicorn

    if settings.prediction_log:  # refused here, once, rather than in every worker
        check_writable(settings.resolved_spool_dir())
    logging_config = log_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(logging_config)
    check_exposure(settings)
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": logging_config,
        "log_level": settings.log_level,
        "access_log": False,  # the service middleware writes the access log, with request ids
        "timeout_graceful_shutdown": int(settings.shutdown_timeout_s),
        "server_header": False,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
        "ssl_keyfile_password": ssl_password(),
        "proxy_headers": settings.proxy_headers,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }
    if settings.workers == 1:
        from modelyard.core.bundle import load_bundle
        from modelyard.serving.app import create_app

        app = create_app(load_bundle(Path(settings.bundle)), settings.overrides, settings)
        uvicorn.run(app, **common)  # type: ignore[arg-type]
        return
    metrics_dir = tempfile.mkdtemp(prefix="modelyard-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    os.environ[SETTINGS_ENV] = settings.to_env()
    try:
        uvicorn.run(FACTORY, factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
