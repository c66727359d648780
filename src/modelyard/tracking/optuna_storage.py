"""Where a sweep's Optuna study lives, and how the processes that share it agree.

By default the study is a SQLite file in the sweep directory, as it always was. ``sweep.storage``
names a database URL instead (PostgreSQL in production), which is Optuna's own distributed mode:
every process that opens the same study name on the same URL draws its trials from one study,
and the database hands out distinct trial numbers. This module opens that storage with a
one-line error for a bad or unreachable URL, masks the URL's password wherever it is shown,
names each worker, and gives the workers an atomic "only one of us does this" (:func:`claim`)
for the jobs that must happen once per study, such as registering the best trial.
"""

import os
import socket
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.core.errors import ConfigError

#: A trial silent for this many heartbeats is taken for dead (its worker was killed).
GRACE_HEARTBEATS = 3
#: Seconds to wait for a database server before calling it unreachable.
CONNECT_TIMEOUT_S = 10
#: Tries at creating Optuna's tables when other workers create them at the same moment.
CREATE_ATTEMPTS = 4
EXAMPLE_URL = "postgresql+psycopg://user:password@host:5432/optuna"


def mask(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs, tracked params, saved configs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable storage URL>"


def worker_id() -> str:
    """``host:pid``: tells apart the processes of one study (a pod's host name is its name)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_seed(seed: int, worker: str) -> int:
    """A seed of its own for each worker, derived from the configured one: workers sharing a
    study with one seed would all propose the same random start-up trials."""
    return zlib.crc32(f"{seed}:{worker}".encode())


def open_storage(url: str | None, directory: Path, heartbeat_s: float) -> Any:
    """The study's Optuna storage: ``url``, or ``<directory>/optuna.db`` when ``url`` is None.

    Heartbeats are on, so a trial whose worker died is marked FAIL by the next worker instead of
    staying RUNNING for ever. Raises :class:`ConfigError` (one line, password masked) when the
    URL is malformed, its driver is missing or its server cannot be reached.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError, SQLAlchemyError

    if url is None:
        url = f"sqlite:///{directory.resolve()}/optuna.db"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"sweep.storage is not a database URL (expected e.g. {EXAMPLE_URL})"
        ) from None
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() in ("postgresql", "mysql"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    heartbeat = max(1, round(heartbeat_s))
    try:
        for attempt in range(1, CREATE_ATTEMPTS):
            try:
                return _rdb_storage(url, connect_args, heartbeat)
            except (IntegrityError, ProgrammingError):
                # Workers starting together on an empty database all create Optuna's tables;
                # the losers collide with the winner's (duplicate type or key) and find them on
                # a later try.
                time.sleep(0.5 * attempt)
        return _rdb_storage(url, connect_args, heartbeat)
    except (SQLAlchemyError, ImportError, ValueError, RuntimeError, OSError) as exc:
        reason = _first_line(exc)
        if parsed.password:
            reason = reason.replace(str(parsed.password), "***")
        raise ConfigError(
            f"sweep.storage {mask(url)}: cannot open the study storage: {reason}"
        ) from None


def _rdb_storage(url: str, connect_args: dict[str, Any], heartbeat: int) -> Any:
    import optuna

    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args},
            heartbeat_interval=heartbeat,
            grace_period=GRACE_HEARTBEATS * heartbeat,
        )


def fail_stale_trials(study: Any) -> None:
    """Mark FAIL the trials whose worker stopped sending heartbeats (it died), so that a shared
    study never waits on a dead machine; Optuna does this itself before each new trial."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim`: whether this worker won, and the claim's own record
    (an Optuna study whose user attributes the winner fills in)."""

    won: bool
    record: Any


def claim(storage: Any, key: str, worker: str) -> Claim:
    """Atomically claim the one-off job ``key`` for ``worker``.

    Creating a study is atomic in every Optuna storage (study names are unique), so of all the
    workers that race for ``key`` exactly one creates it and wins; the others load the winner's
    record. :func:`release` gives a claim back when its job failed, so a later run can retry.
    """
    import optuna

    try:
        record = optuna.create_study(study_name=key, storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        return Claim(False, optuna.load_study(study_name=key, storage=storage))
    record.set_user_attr("worker", worker)
    return Claim(True, record)


def release(storage: Any, key: str) -> None:
    import optuna

    optuna.delete_study(study_name=key, storage=storage)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
