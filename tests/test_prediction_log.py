"""The prediction log on a real SQLite file and a real PostgreSQL server: batched writes off the
request path, and nothing lost when the database goes away, overflows or the service stops."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelyard.serving.prediction_log import (
    PredictionLog,
    PredictionRecord,
    count_rows,
    predictions,
)
from postgres_server import PostgresServer


def record(number: int) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"req-{number:06d}",
        model="nilm-seq2point",
        version="20261122-120000",
        route="/predict",
        status=200,
        latency_ms=1.5 + number,
        inputs={"length": number, "mean_w": 400.0},
        outputs={"kettle": [0.0, 2000.0][number % 2]},
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def own_spool(log: PredictionLog) -> Path:
    return log.spool_dir / f"spool-{os.getpid()}.jsonl"


def spool_files(log: PredictionLog) -> list[Path]:
    """What waits in this log's spool (its owner record aside)."""
    return sorted(log.spool_dir.glob("spool-*"))


def request_ids(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.select(predictions.c.request_id).order_by(predictions.c.id)
            return [str(r) for r in connection.execute(query).scalars()]
    finally:
        engine.dispose()


def test_records_from_many_threads_are_all_written_in_batches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/predictions.db"
    log = PredictionLog(url, spool_dir=tmp_path / "spool", batch_size=50)
    log.start()

    def client(first: int) -> None:
        for number in range(first, first + 250):
            log.record(record(number))

    threads = [threading.Thread(target=client, args=(k * 250,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert log.stats.recorded == log.stats.written == 1000
    assert sorted(request_ids(url)) == [f"req-{n:06d}" for n in range(1000)]
    assert not spool_files(log)

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        journal = connection.execute(sa.text("PRAGMA journal_mode")).scalar()
        row = connection.execute(
            sa.select(predictions).where(predictions.c.request_id == "req-000007")
        ).one()
    engine.dispose()
    assert journal == "wal"
    assert row.inputs == {"length": 7, "mean_w": 400.0} and row.outputs == {"kettle": 2000.0}
    assert row.latency_ms == 8.5 and row.model == "nilm-seq2point" and row.status == 200


def test_recording_never_waits_for_the_database(tmp_path: Path) -> None:
    # a database that cannot be opened yet: its directory does not exist
    url = f"sqlite:///{tmp_path}/later/predictions.db"
    log = PredictionLog(url, spool_dir=tmp_path / "spool", batch_size=10, retry_max_s=0.2)
    log.start()
    started = time.perf_counter()
    for number in range(200):
        log.record(record(number))
    assert time.perf_counter() - started < 0.5  # appends only
    wait_for(lambda: log.stats.write_errors > 0)
    assert log.stats.written == 0 and log.stats.buffered == 200 and not log.stats.database_ok

    (tmp_path / "later").mkdir()  # the database comes back: the backlog catches up
    wait_for(lambda: log.stats.written == 200)
    assert log.stats.database_ok and log.stats.buffered == 0
    log.close()
    assert request_ids(url) == [f"req-{n:06d}" for n in range(200)]


def test_overflow_goes_to_the_spool_and_is_replayed_in_order(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/later/predictions.db"
    spool = tmp_path / "spool"
    log = PredictionLog(url, spool_dir=spool, batch_size=10, max_buffer=50, retry_max_s=0.2)
    log.start()
    for number in range(300):
        log.record(record(number))
    assert log.stats.buffered <= 50 + 10  # bounded (plus one batch in flight)
    assert log.stats.spooled >= 240 and own_spool(log).is_file()

    (tmp_path / "later").mkdir()
    wait_for(lambda: log.stats.written == 300)
    log.close()
    assert log.stats.replayed == log.stats.spooled
    stored = request_ids(url)
    assert len(stored) == 300 and sorted(stored) == [f"req-{n:06d}" for n in range(300)]
    assert not spool_files(log) and log.stats.spool_pending == 0


def test_shutdown_with_the_database_down_spools_and_the_next_start_replays(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/later/predictions.db"
    spool = tmp_path / "spool"
    first = PredictionLog(url, spool_dir=spool, batch_size=10, retry_max_s=0.2)
    first.start()
    for number in range(120):
        first.record(record(number))
    first.close(timeout_s=2)
    assert first.stats.written == 0 and len(own_spool(first).read_text().splitlines()) == 120

    (tmp_path / "later").mkdir()
    second = PredictionLog(url, spool_dir=spool)
    assert second.stats.spool_pending == 120
    second.start()
    second.record(record(120))
    wait_for(lambda: second.stats.written == 121)
    second.close()
    assert request_ids(url) == [f"req-{n:06d}" for n in range(121)]


def spool_file(directory: Path, pid: int, numbers: range) -> Path:
    path = directory / f"spool-{pid}.jsonl"
    path.write_text("".join(record(n).to_json() + "\n" for n in numbers))
    return path


def test_spools_of_stopped_processes_are_replayed_and_live_ones_left_alone(
    tmp_path: Path,
) -> None:
    # a worker that is gone (its process has exited) and one that is still running
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    url = f"sqlite:///{tmp_path}/predictions.db"
    owned = PredictionLog(url, spool_dir=tmp_path / "spool").spool_dir
    gone = spool_file(owned, int(finished.stdout), range(30))
    running = spool_file(owned, os.getppid(), range(30, 40))
    log = PredictionLog(url, spool_dir=tmp_path / "spool", batch_size=10)
    assert log.stats.spool_pending == 30  # only what this process may take over
    log.start()
    log.record(record(40))
    wait_for(lambda: log.stats.written == 31)
    log.close()
    assert sorted(request_ids(url)) == [f"req-{n:06d}" for n in [*range(30), 40]]
    assert not gone.exists() and running.is_file()


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        PredictionLog(f"sqlite:///{tmp_path}/p.db", tmp_path / "s", batch_size=10, max_buffer=5)


def test_postgresql_outage_is_buffered_and_caught_up(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    log = PredictionLog(postgres.url, spool_dir=tmp_path / "spool", batch_size=20, retry_max_s=0.3)
    log.start()
    for number in range(100):
        log.record(record(number))
    wait_for(lambda: log.stats.written == 100)

    postgres.stop()
    try:
        for number in range(100, 250):
            log.record(record(number))
        wait_for(lambda: log.stats.write_errors > 0)
        assert log.stats.written == 100 and not log.stats.database_ok
    finally:
        postgres.start()
    wait_for(lambda: log.stats.written == 250)
    log.close()
    assert request_ids(postgres.url) == [f"req-{n:06d}" for n in range(250)]
    assert count_rows(postgres.url) == 250
