"""Telling a database that is down from a record it will not take, and what is kept of the latter.

A database that cannot be reached (connection refused, dropped, timed out, locked) is waited for:
the records stay buffered or spooled and are retried. So is one whose table is missing or not
writable for this user (``ProgrammingError``): that is the operator's to fix, not the records'
fault, and no request can cause it (every value a request controls reaches the database as JSON
text). Any other failure of an insert (a value out of range, a constraint, a value the driver or
the JSON encoder refuses) is the record's fault: retrying cannot help, and it must not hold up
the records around it. Such a record becomes a :class:`DeadLetter`: a row of plain, bounded text
that every database stores.
"""

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from modelyard.serving.log_json import safe_text

_DOWN = (
    sa.exc.OperationalError,  # refused, dropped, locked, read-only, out of disk
    sa.exc.ProgrammingError,  # no such table, permission denied
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,  # no pooled connection in time
    ConnectionError,
    TimeoutError,
)
MAX_ERROR_CHARS = 1_000
MAX_RECORD_CHARS = 100_000


class DatabaseDownError(Exception):
    """The database could not be reached; ``remaining`` records were not stored."""

    def __init__(self, remaining: list[Any], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.remaining = remaining
        self.cause = cause


def is_database_down(exc: BaseException) -> bool:
    """True for connectivity failures (retry later), False for a record the database refuses."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _DOWN)


def short_error(exc: BaseException) -> str:
    """The first line of an error, bounded (driver messages can quote a whole statement)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


@dataclass(frozen=True)
class DeadLetter:
    """A record the database refused, as plain text that always fits the dead-letter table."""

    request_id: str
    server_request_id: str | None
    created_at: datetime | None
    model: str
    error: str
    record: str
    failed_at: datetime

    @classmethod
    def of(
        cls,
        error: BaseException | str,
        record: str,
        request_id: Any = "",
        server_request_id: Any = None,
        created_at: Any = None,
        model: Any = "",
    ) -> "DeadLetter":
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(
            request_id=_clean(request_id, 64) or "unknown",
            server_request_id=_clean(server_request_id, 32) or None,
            created_at=created_at if isinstance(created_at, datetime) else None,
            model=_clean(model, 200),
            error=_clean(message, MAX_ERROR_CHARS),
            record=_clean(record, MAX_RECORD_CHARS),
            failed_at=datetime.now(UTC),
        )

    def row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _clean(value: Any, limit: int) -> str:
    """Text any database stores: no NUL characters, valid UTF-8, bounded."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else repr(value)
    return safe_text(text.replace("\x00", "\\x00"), limit)
