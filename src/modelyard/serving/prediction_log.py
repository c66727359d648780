"""The prediction log: every prediction stored in SQL, off the request path, losing nothing.

Requests hand a :class:`PredictionRecord` to :meth:`PredictionLog.record`, which only appends to
an in-memory buffer. A writer thread inserts the buffer in batches (SQLAlchemy Core; SQLite in
WAL mode by default, PostgreSQL or any SQLAlchemy URL otherwise).

Nothing is lost:

* when the database cannot be reached, records stay buffered and the writer retries with
  back-off; the service keeps answering;
* a record the database refuses (a value it cannot store) never blocks the others: the batch is
  retried row by row, the rows that fit are stored and each refused one goes to the dead-letter
  table (see :mod:`~modelyard.serving.dead_letters`), counted and logged once;
* the buffer is bounded: beyond ``max_buffer`` records the oldest ones are appended to the spool
  (JSON lines on local disk, owned by this database and model: :mod:`~modelyard.serving.spool`)
  instead of being dropped;
* spooled records are replayed into the database once it is reachable again, oldest first;
* :meth:`PredictionLog.close` (graceful shutdown) writes everything still buffered, or spools it
  when the database is down, so the next start replays it.

What a kill -9 loses is what was not yet written: the buffer and the batch in flight (about the
last ``flush_interval_s`` of requests; see docs/serving.md).

This module imports no torch; it is part of the server.
"""

import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from modelyard.serving.context import new_server_request_id
from modelyard.serving.dead_letters import (
    DatabaseDownError,
    DeadLetter,
    is_database_down,
    short_error,
)
from modelyard.serving.log_json import to_json
from modelyard.serving.log_schema import (
    TABLE,
    dead_letters,
    metadata,
    predictions,
    prepare_schema,
)
from modelyard.serving.spool import Spool

__all__ = [
    "TABLE",
    "LogRecord",
    "LogStats",
    "PredictionLog",
    "PredictionRecord",
    "RecordLog",
    "count_rows",
    "dead_letters",
    "make_engine",
    "metadata",
    "predictions",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionRecord:
    request_id: str
    model: str
    version: str
    route: str
    status: int
    latency_ms: float
    inputs: Any
    outputs: Any
    server_request_id: str = field(default_factory=new_server_request_id)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        # shallow on purpose: dataclasses.asdict deep-copies inputs and outputs, which cost the
        # writer thread ten times the insert itself
        return {name: getattr(self, name) for name in _FIELDS}

    def to_json(self) -> str:
        """One spool line; never fails (see log_json)."""
        return to_json(self.row() | {"created_at": self.created_at.isoformat()})

    @classmethod
    def from_json(cls, line: str) -> "PredictionRecord":
        """A spool line back into a record (ValueError, TypeError or KeyError when malformed:
        a value of the wrong type would reach the driver as a schema error, not a bad row)."""
        raw = json.loads(line)
        raw["created_at"] = datetime.fromisoformat(raw["created_at"])
        for name, kinds in _SCALARS.items():
            if name in raw and (not isinstance(raw[name], kinds) or isinstance(raw[name], bool)):
                raise TypeError(f"{name} is a {type(raw[name]).__name__}")
        return cls(**raw)

    def dead_letter(self, error: BaseException | str) -> DeadLetter:
        return DeadLetter.of(
            error, self.to_json(), self.request_id, self.server_request_id, self.created_at,
            self.model,
        )  # fmt: skip


_FIELDS = tuple(f.name for f in fields(PredictionRecord))
_SCALARS: dict[str, type | tuple[type, ...]] = {
    "request_id": str,
    "server_request_id": str,
    "model": str,
    "version": str,
    "route": str,
    "status": int,
    "latency_ms": (int, float),
}


@dataclass
class LogStats:
    """Counters for the /metrics endpoint and for tests."""

    recorded: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    write_errors: int = 0
    buffered: int = 0
    spool_pending: int = 0
    database_ok: bool = False
    #: records the database refused, kept as dead letters (table, or file if even that failed)
    dead_letters: int = 0
    #: records saved to the fallback spool because the spool directory could not be written
    spooled_fallback: int = 0
    #: records neither stored nor spooled anywhere (written to the error log as a last resort)
    lost: int = 0


def sqlite_engine(url: str) -> Engine:
    """SQLite in WAL mode: readers never block the writer; a busy file is waited for."""
    engine = sa.create_engine(url, connect_args={"timeout": 30}, json_serializer=to_json)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return sqlite_engine(url)
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=2, max_overflow=0, json_serializer=to_json
    )


class LogRecord(Protocol):
    """What :class:`RecordLog` needs of a record: its table row, its spool line and its dead
    letter (``request_id`` names it in the log)."""

    @property
    def request_id(self) -> str: ...

    def row(self) -> dict[str, Any]: ...

    def to_json(self) -> str: ...

    def dead_letter(self, error: BaseException | str) -> DeadLetter: ...


Record = TypeVar("Record", bound=LogRecord)


class RecordLog(Generic[Record]):
    """Records of one kind stored in one table, losing nothing (see the module docstring): the
    prediction log, and the feedback log (:mod:`~modelyard.serving.feedback`) beside it.

    ``parse`` turns a spool line back into a record (ValueError, TypeError or KeyError when the
    line is not one); ``label`` starts every message of this log.
    """

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        table: sa.Table,
        parse: Callable[[str], Record],
        label: str,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        max_buffer: int = 50_000,
        retry_max_s: float = 5.0,
        model: str = "",
    ) -> None:
        """``model`` (the served model's name), ``url`` and ``table`` own the spool: records
        spooled by another database, model or table are never replayed here. Raises
        ConfigError when the spool directory cannot be written."""
        if batch_size < 1 or max_buffer < batch_size:
            raise ValueError(f"{label}: need 1 <= batch_size <= max_buffer")
        self.url = url
        self.table = table
        self.parse = parse
        self.label = label
        self.spool = Spool(Path(spool_dir), url, model, table.name)
        self.spool.prepare()
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.retry_max_s = retry_max_s
        self.stats = LogStats()
        self._engine = make_engine(url)
        self._buffer: deque[Record] = deque()
        self._in_flight: list[Record] = []
        self._lock = threading.Condition()
        self._closing = False
        self._schema_ready = False
        self._spool_error = ""
        self._thread = threading.Thread(target=self._run, name=label.replace(" ", "-"), daemon=True)
        self.stats.spool_pending = self.spool.count()

    @property
    def spool_dir(self) -> Path:
        """This log's own spool directory (under the configured one)."""
        return self.spool.directory

    # -- request side ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def record(self, record: Record) -> None:
        """Queue one record; never blocks on the database."""
        overflow: list[Record] = []
        with self._lock:
            self._buffer.append(record)
            self.stats.recorded += 1
            while len(self._buffer) > self.max_buffer:
                overflow.append(self._buffer.popleft())
            self.stats.buffered = self._pending()
            if len(self._buffer) >= self.batch_size:
                self._lock.notify()
        if overflow:
            self._spool_records(overflow)

    def _pending(self) -> int:
        """Records held in memory: buffered plus the batch being written."""
        return len(self._buffer) + len(self._in_flight)

    # -- shutdown --------------------------------------------------------------------------
    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered (or spool it if the database is down) and stop the writer."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with self._lock:
            # a writer stuck on a hung database still holds its batch: spool that too (a
            # duplicate row is possible if the insert later completes; a lost one is not)
            stuck = list(self._in_flight) if self._thread.is_alive() else []
            left = stuck + list(self._buffer)
            self._buffer.clear()
            self.stats.buffered = 0
        if left:
            self._spool_records(left)
        self._engine.dispose()

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._lock:
                if backoff and not self._closing:
                    self._lock.wait(backoff)  # after a failure; close() wakes it up
                elif not self._closing and len(self._buffer) < self.batch_size:
                    self._lock.wait(self.flush_interval_s)
                closing = self._closing
                # taken out of the buffer while in flight, so that an overflow cannot spool them
                size = min(self.batch_size, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(size)]
                self._in_flight = batch
            try:
                try:
                    self._replay_spool()
                except DatabaseDownError as down:  # the spool's records stay in their file
                    raise DatabaseDownError(batch, down.cause) from down
                except OSError as exc:  # a spool file that cannot be read must not stop the log
                    self._spool_unreadable(exc)
                self._store(batch)
            except DatabaseDownError as down:
                with self._lock:
                    # what was not stored goes back in front, in order
                    self._buffer.extendleft(reversed(down.remaining))
                    self._in_flight = []
                    self.stats.buffered = self._pending()
                self._database_down(down.cause)
                backoff = min(self.retry_max_s, max(0.1, backoff * 2))
                if closing:
                    return  # close() spools what is left
                continue
            except Exception:  # a bug must not stop the writer: keep the batch, retry later
                logger.exception("%s: unexpected error in the writer", self.label)
                with self._lock:
                    self._buffer.extendleft(reversed(batch))
                    self._in_flight = []
                backoff = self.retry_max_s
                if closing:
                    return
                continue
            with self._lock:
                self._in_flight = []
                self.stats.buffered = self._pending()
            backoff = 0.0
            if self.stats.write_errors and not self.stats.database_ok:
                logger.warning("%s: database reachable again; catching up", self.label)
            self.stats.database_ok = True
            with self._lock:
                if closing and not self._buffer:
                    return

    def _spool_unreadable(self, exc: OSError) -> None:
        message = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
        if message != self._spool_error:  # once per distinct failure, not once per batch
            logger.error("%s: spool not replayed (%s); its records stay there", self.label, message)
            self._spool_error = message

    def _database_down(self, cause: BaseException) -> None:
        self._schema_ready = False  # a table dropped meanwhile is created again on the retry
        if self.stats.database_ok or self.stats.write_errors == 0:  # log transitions only
            logger.warning(
                "%s: database unavailable (%s); buffering and retrying",
                self.label,
                short_error(cause),
            )
        self.stats.write_errors += 1
        self.stats.database_ok = False

    def _store(self, records: list[Record]) -> int:
        """Store ``records``: in one transaction, or row by row when the database refuses one
        of them (each refused row becomes a dead letter). Returns how many were stored; raises
        DatabaseDownError with the records not yet handled when the database is unreachable."""
        if not records:
            return 0
        self._ensure_schema(records)
        try:
            self._insert(records)
        except Exception as exc:  # sorted into "down" and "bad record" below
            if is_database_down(exc):
                raise DatabaseDownError(records, exc) from exc
            return self._store_row_by_row(records)
        self.stats.written += len(records)
        return len(records)

    def _store_row_by_row(self, records: list[Record]) -> int:
        stored = 0
        for index, record in enumerate(records):
            try:
                self._insert([record])
            except Exception as exc:
                if is_database_down(exc):
                    raise DatabaseDownError(records[index:], exc) from exc
                self._dead_letter(record.dead_letter(exc), records[index:])
            else:
                stored += 1
                self.stats.written += 1
        return stored

    def _dead_letter(self, letter: DeadLetter, unhandled: list[Any]) -> None:
        """Keep a refused record: in the dead-letter table, else in a dead-letter file, else (the
        disk failing too) in the error log. Counted once per record, as a dead letter or, in the
        error log only, as lost; logged once."""
        try:
            with self._engine.begin() as connection:
                connection.execute(dead_letters.insert(), [letter.row()])
            where: str | None = f"table {dead_letters.name}"
        except Exception as exc:
            if is_database_down(exc):
                raise DatabaseDownError(unhandled, exc) from exc
            where = self._dead_letter_file(letter, exc)
        if where is not None:
            self.stats.dead_letters += 1
        logger.warning(
            "%s: record %s refused by the database (%s); kept in %s",
            self.label,
            letter.request_id,
            short_error(RuntimeError(letter.error)),
            where or "the error log (counted as lost)",
        )

    def _dead_letter_file(self, letter: DeadLetter, table_error: BaseException) -> str | None:
        """The dead-letter file written, or None (counted as lost) when even that failed."""
        line = to_json(letter.row() | {"table_error": short_error(table_error)})
        try:
            return str(self.spool.append_dead_letters([line]))
        except OSError as exc:
            self.stats.lost += 1
            logger.error("%s: dead letter could not be saved (%s): %s", self.label, exc, line)
            return None

    def _ensure_schema(self, records: list[Record]) -> None:
        if self._schema_ready:
            return
        try:
            with self._engine.begin() as connection:
                prepare_schema(connection)
        except Exception as exc:  # no table yet: nothing can be stored, retry
            raise DatabaseDownError(records, exc) from exc
        self._schema_ready = True

    def _insert(self, records: Sequence[Record]) -> None:
        """Insert in one transaction: all of ``records`` are stored, or none."""
        with self._engine.begin() as connection:
            for start in range(0, len(records), self.batch_size):
                chunk = records[start : start + self.batch_size]
                connection.execute(self.table.insert(), [r.row() for r in chunk])

    # -- spool -----------------------------------------------------------------------------
    def _spool_records(self, records: list[Record]) -> None:
        """Save records on local disk; never raises (the request side calls it on overflow)."""
        try:
            path = self.spool.append([r.to_json() for r in records])
        except OSError as exc:
            self.stats.lost += len(records)
            logger.error(
                "%s: %d record(s) could be neither stored nor spooled (%s); "
                "they follow, one per line",
                self.label,
                len(records),
                exc,
            )
            for record in records:
                logger.error("%s: unsaved record: %s", self.label, record.to_json())
            return
        self.stats.spooled += len(records)
        self.stats.spool_pending += len(records)  # the fallback directory is replayed too
        if path.parent != self.spool.directory:
            self.stats.spooled_fallback += len(records)

    def _replay_spool(self) -> None:
        """Replay every claimable spool file into the database, oldest first."""
        if self.stats.spool_pending == 0 and not self.spool.claimable():
            return
        for path in self.spool.claimable():
            claimed = self.spool.claim(path)
            if claimed is not None:
                self._replay_file(claimed)
        with self.spool.lock:
            self.stats.spool_pending = self.spool.count()

    def _replay_file(self, claimed: Path) -> None:
        """One claimed file: its records stored (a malformed line becomes a dead letter), then
        the file removed. If the database goes away half-way, the file keeps only what is left,
        so nothing is stored twice."""
        lines = [
            line
            for line in claimed.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()
        ]
        records: list[Record] = []
        malformed: list[str] = []
        for line in lines:
            try:
                records.append(self.parse(line))
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                malformed.append(line)
        try:
            stored = self._store(records)
            for index, line in enumerate(malformed):
                error = f"spool line is not a record of the {self.label}"
                self._dead_letter(DeadLetter.of(error, line), malformed[index:])
        except DatabaseDownError as down:
            left = [r.to_json() for r in down.remaining if not isinstance(r, str)]
            left += [line for line in down.remaining if isinstance(line, str)]
            if not any(isinstance(r, str) for r in down.remaining):
                left += malformed
            self.spool.keep_only(claimed, left)
            raise
        claimed.unlink()
        self.stats.replayed += stored


class PredictionLog(RecordLog[PredictionRecord]):
    """The prediction log: one row of ``predictions`` per answered prediction."""

    def __init__(self, url: str, spool_dir: Path, **options: Any) -> None:
        super().__init__(
            url, spool_dir, predictions, PredictionRecord.from_json, "prediction log", **options
        )

    def unwritten(self, server_ids: Collection[str]) -> dict[str, PredictionRecord]:
        """The records among ``server_ids`` not yet in the database: in memory (buffered or in
        flight), then in this process's claimable spool files. Looked at in the order records
        move (memory, spool, database), so that a caller that looks in the database after this
        misses none that moves on meanwhile."""
        wanted = set(server_ids)
        found: dict[str, PredictionRecord] = {}
        with self._lock:
            for record in (*self._in_flight, *self._buffer):
                if record.server_request_id in wanted:
                    found[record.server_request_id] = record
        missing = wanted - found.keys()
        if missing and (self.stats.spool_pending or self.spool.claimable()):
            found |= self._spooled(missing)
        return found

    def _spooled(self, server_ids: set[str]) -> dict[str, PredictionRecord]:
        found: dict[str, PredictionRecord] = {}
        for path in self.spool.claimable():
            text = ""
            with contextlib.suppress(OSError):  # claimed (renamed) meanwhile: in the database
                text = path.read_text(encoding="utf-8", errors="replace")
            for server_id in [i for i in server_ids if i in text]:
                for line in text.splitlines():
                    if server_id in line:
                        with contextlib.suppress(ValueError, TypeError, KeyError):
                            record = PredictionRecord.from_json(line)
                            if record.server_request_id == server_id:
                                found[server_id] = record
        return found


def count_rows(url: str) -> int:
    """Rows in the prediction log (for tests and `modelyard` checks)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(predictions)
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()
