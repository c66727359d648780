"""The prediction log: every prediction stored in SQL, off the request path, losing nothing.

Requests hand a :class:`PredictionRecord` to :meth:`PredictionLog.record`, which only appends to
an in-memory buffer. A writer thread inserts the buffer in batches (SQLAlchemy Core; SQLite in
WAL mode by default, PostgreSQL or any SQLAlchemy URL otherwise).

Nothing is lost:

* when the database cannot be reached, records stay buffered and the writer retries with
  back-off; the service keeps answering;
* the buffer is bounded: beyond ``max_buffer`` records the oldest ones are appended to a spool
  file (JSON lines, one per process) in ``spool_dir`` on local disk instead of being dropped;
* spooled records are replayed into the database once it is reachable again, oldest first;
* :meth:`PredictionLog.close` (graceful shutdown) writes everything still buffered, or spools it
  when the database is down, so the next start replays it.

This module imports no torch; it is part of the server.
"""

import contextlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

TABLE = "predictions"
metadata = sa.MetaData()
predictions = sa.Table(
    TABLE,
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("route", sa.String(100), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
)


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
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        # shallow on purpose: dataclasses.asdict deep-copies inputs and outputs, which cost the
        # writer thread ten times the insert itself
        return {name: getattr(self, name) for name in _FIELDS}

    def to_json(self) -> str:
        return _to_json(self.row() | {"created_at": self.created_at.isoformat()})

    @classmethod
    def from_json(cls, line: str) -> "PredictionRecord":
        raw = json.loads(line)
        raw["created_at"] = datetime.fromisoformat(raw["created_at"])
        return cls(**raw)


_FIELDS = tuple(f.name for f in fields(PredictionRecord))


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


def _to_json(value: Any) -> str:
    """JSON text (orjson: the writer thread shares the GIL with the requests, so it must be
    cheap); dates, decimals or numpy values in inputs are written, never fail the batch."""
    return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def sqlite_engine(url: str) -> Engine:
    """SQLite in WAL mode: readers never block the writer; a busy file is waited for."""
    engine = sa.create_engine(url, connect_args={"timeout": 30}, json_serializer=_to_json)

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
        url, pool_pre_ping=True, pool_size=2, max_overflow=0, json_serializer=_to_json
    )


class PredictionLog:
    def __init__(
        self,
        url: str,
        spool_dir: Path,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        max_buffer: int = 50_000,
        retry_max_s: float = 5.0,
    ) -> None:
        if batch_size < 1 or max_buffer < batch_size:
            raise ValueError("prediction log: need 1 <= batch_size <= max_buffer")
        self.url = url
        self.spool_dir = Path(spool_dir)
        self._claims = 0
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.retry_max_s = retry_max_s
        self.stats = LogStats()
        self._engine = make_engine(url)
        self._buffer: deque[PredictionRecord] = deque()
        self._in_flight: list[PredictionRecord] = []
        self._lock = threading.Condition()
        self._spool_lock = threading.Lock()
        self._closing = False
        self._schema_ready = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.stats.spool_pending = self._count_spooled()

    # -- request side ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def record(self, record: PredictionRecord) -> None:
        """Queue one prediction; never blocks on the database."""
        overflow: list[PredictionRecord] = []
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
                self._write_pending_spool()
                self._insert(batch)
                with self._lock:
                    self._in_flight = []
                    self.stats.buffered = self._pending()
                self.stats.written += len(batch)
                backoff = 0.0
                if self.stats.write_errors and not self.stats.database_ok:
                    logger.warning("prediction log: database reachable again; catching up")
                self.stats.database_ok = True
            except sa.exc.SQLAlchemyError as exc:
                with self._lock:
                    self._buffer.extendleft(reversed(batch))  # back in front, in order
                    self._in_flight = []
                    self.stats.buffered = self._pending()
                if self.stats.database_ok or self.stats.write_errors == 0:  # log transitions only
                    logger.warning(
                        "prediction log: database unavailable (%s); buffering and retrying",
                        _short(exc),
                    )
                self.stats.write_errors += 1
                self.stats.database_ok = False
                backoff = min(self.retry_max_s, max(0.1, backoff * 2))
                if closing:
                    return  # close() spools what is left
                continue
            with self._lock:
                if closing and not self._buffer:
                    return

    def _insert(self, records: Sequence[PredictionRecord]) -> None:
        """Insert in one transaction: all of ``records`` are stored, or none."""
        if not records:
            return
        with self._engine.begin() as connection:
            if not self._schema_ready:
                metadata.create_all(connection)
                self._schema_ready = True
            for start in range(0, len(records), self.batch_size):
                chunk = records[start : start + self.batch_size]
                connection.execute(predictions.insert(), [r.row() for r in chunk])

    # -- spool -----------------------------------------------------------------------------
    # Each process appends to its own file, spool-<pid>.jsonl, so several workers never write
    # the same file. Replaying claims a file by renaming it to spool-<pid>-<n>.replaying (one
    # rename: two workers cannot both claim it); files of processes that are gone (a previous
    # run, a crashed worker) are claimed the same way, so nothing waits for its own writer.
    def _own_spool(self) -> Path:
        return self.spool_dir / f"spool-{os.getpid()}.jsonl"

    def _spool_records(self, records: list[PredictionRecord]) -> None:
        with self._spool_lock:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            with self._own_spool().open("a", encoding="utf-8") as handle:
                handle.writelines(r.to_json() + "\n" for r in records)
                handle.flush()
            self.stats.spooled += len(records)
            self.stats.spool_pending += len(records)

    def _claimable(self) -> list[Path]:
        """Spool files this process may replay: its own and those of processes that are gone."""
        if not self.spool_dir.is_dir():
            return []
        me = os.getpid()
        return [
            path
            for path in sorted(self.spool_dir.glob("spool-*"))
            if path.suffix in {".jsonl", ".replaying"}
            and ((owner := _spool_owner(path)) == me or not _alive(owner))
        ]

    def _count_spooled(self) -> int:
        total = 0
        for path in self._claimable():
            with contextlib.suppress(OSError), path.open(encoding="utf-8") as handle:
                total += sum(1 for line in handle if line.strip())
        return total

    def _claim(self, path: Path) -> Path | None:
        """Rename ``path`` to a name owned by this process; None if another one was faster."""
        if path.suffix == ".replaying" and _spool_owner(path) == os.getpid():
            return path
        self._claims += 1
        target = self.spool_dir / f"spool-{os.getpid()}-{self._claims}.replaying"
        try:
            path.replace(target)
        except FileNotFoundError:
            return None
        return target

    def _write_pending_spool(self) -> None:
        """Replay every claimable spool file into the database, one transaction per file."""
        if self.stats.spool_pending == 0 and not self._claimable():
            return
        for path in self._claimable():
            with self._spool_lock:
                claimed = self._claim(path)
            if claimed is None:
                continue
            lines = claimed.read_text(encoding="utf-8").splitlines()
            records = [PredictionRecord.from_json(line) for line in lines if line.strip()]
            self._insert(records)  # one transaction: a failure half-way leaves no duplicates
            claimed.unlink()
            self.stats.replayed += len(records)
            self.stats.written += len(records)
        with self._spool_lock:
            self.stats.spool_pending = self._count_spooled()


def _spool_owner(path: Path) -> int:
    """The pid in ``spool-<pid>.jsonl`` or ``spool-<pid>-<n>.replaying`` (0 if unreadable)."""
    digits = path.stem.removeprefix("spool-").split("-", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def count_rows(url: str) -> int:
    """Rows in the prediction log (for tests and `modelyard` checks)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(predictions)
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
