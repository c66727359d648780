"""Which logged predictions a report looks at: the window (``--since``, ``--last``), and reading
it from the prediction log (SQLite or PostgreSQL) without holding the log in memory.

Only answered predictions count: ``route == "/predict"`` and ``status == 200`` of the bundle's
model (any version: the window may span a promotion). Rows come newest first, in chunks, and at
most :data:`MAX_WINDOW_ROWS` of them, so a week of traffic does not have to fit in memory.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from modelyard.core.errors import DataError
from modelyard.serving.log_schema import TABLE, predictions

#: The most logged predictions one report reads (the newest ones); the verdict says when it cut.
MAX_WINDOW_ROWS = 200_000
#: The window when neither ``--since`` nor ``--last`` is given.
DEFAULT_LAST = 10_000
#: The route whose answers are predictions.
PREDICT_ROUTE = "/predict"
_CHUNK = 5_000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class EmptyWindowError(DataError):
    """The window holds no prediction the monitor can judge."""


@dataclass(frozen=True)
class Window:
    """The newest ``last`` predictions, those since ``since``, or both limits at once."""

    since: datetime | None = None
    last: int | None = None

    def __post_init__(self) -> None:
        if self.last is not None and not 1 <= self.last <= MAX_WINDOW_ROWS:
            raise DataError(f"--last must be 1 to {MAX_WINDOW_ROWS:,} predictions, not {self.last}")

    @property
    def limit(self) -> int:
        if self.last is not None:
            return self.last
        return MAX_WINDOW_ROWS if self.since is not None else DEFAULT_LAST

    def describe(self) -> str:
        """The window in words, e.g. "the newest 500 predictions logged since 2026-12-01..."."""
        if self.since is None:
            return f"the newest {self.limit:,} predictions"
        since = self.since.isoformat(timespec="seconds")
        if self.last is None:
            return f"the predictions logged since {since} (at most {self.limit:,})"
        return f"the newest {self.limit:,} predictions logged since {since}"

    def to_json(self) -> dict[str, Any]:
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "last": self.last,
            "limit": self.limit,
        }


def parse_duration(text: str) -> float | None:
    """Seconds in a duration such as 90s, 30m, 24h, 7d or 2w; None when ``text`` is not one."""
    found = _DURATION.match(text)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO time (UTC when it names no zone), or a duration back from now (24h, 7d)."""
    seconds = parse_duration(text)
    if seconds is not None:
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DataError(
            f"--since {text!r} is neither an ISO time (2026-12-01T00:00) nor a duration "
            "(90s, 30m, 24h, 7d, 2w)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def as_utc(when: datetime) -> datetime:
    """A logged time as an aware UTC datetime (SQLite hands back naive UTC times)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def public_url(url: str) -> str:
    """The log's URL with any password hidden, for messages and the verdict."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid URL>"


def open_log(url: str) -> Engine:
    """An engine on an existing prediction log; DataError for a URL that names none."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise DataError(f"--log {url!r} is not a SQLAlchemy database URL") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            raise DataError(f"no prediction log at {public_url(url)}: the file does not exist")
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True)
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(TABLE):
                raise DataError(f"{public_url(url)} holds no {TABLE} table: not a prediction log")
    except SQLAlchemyError as exc:
        raise unreadable(url, exc) from exc
    return engine


def unreadable(url: str, exc: SQLAlchemyError) -> DataError:
    """A database error as one line naming the log (its first line: no SQL, no links)."""
    cause = getattr(exc, "orig", None) or exc  # the driver's own message when there is one
    first = (str(cause) or type(exc).__name__).splitlines()[0]
    return DataError(f"cannot read the prediction log {public_url(url)}: {first}")


@dataclass(frozen=True)
class LoggedPrediction:
    id: int
    created_at: datetime
    version: str
    inputs: Any
    outputs: Any


def answered(model: str) -> list[sa.ColumnElement[bool]]:
    """The conditions that make a log row an answered prediction of ``model``."""
    return [
        predictions.c.model == model,
        predictions.c.route == PREDICT_ROUTE,
        predictions.c.status == 200,
    ]


def since_condition(connection: Connection, since: datetime) -> sa.ColumnElement[bool]:
    """``created_at >= since``: SQLite keeps naive UTC times, PostgreSQL aware ones."""
    when = since.astimezone(UTC)
    if connection.dialect.name == "sqlite":
        when = when.replace(tzinfo=None)
    return predictions.c.created_at >= when


def window_conditions(
    connection: Connection, model: str, window: Window
) -> list[sa.ColumnElement[bool]]:
    """The conditions on a log row to be in the window (the row limit aside)."""
    conditions = answered(model)
    if window.since is not None:
        conditions.append(since_condition(connection, window.since))
    return conditions


def window_is_empty(connection: Connection, model: str, window: Window) -> bool:
    """True when no answered prediction of ``model`` falls in the window (a cheap query)."""
    conditions = window_conditions(connection, model, window)
    query = sa.select(predictions.c.id).where(*conditions).limit(1)
    return connection.execute(query).first() is None


def read_window(connection: Connection, model: str, window: Window) -> Iterator[LoggedPrediction]:
    """The window's predictions, newest first, streamed in chunks."""
    c = predictions.c
    query = (
        sa.select(c.id, c.created_at, c.version, c.inputs, c.outputs)
        .where(*window_conditions(connection, model, window))
        .order_by(c.id.desc())
        .limit(window.limit)
    )
    result = connection.execution_options(yield_per=_CHUNK).execute(query)
    for row in result:
        yield LoggedPrediction(row.id, as_utc(row.created_at), row.version, row.inputs, row.outputs)
