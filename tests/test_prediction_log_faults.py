"""The prediction log against faults, on a real SQLite file and a real PostgreSQL server: poison
records, poison spool lines, spools of other databases or models, an unwritable spool, an
older table without the server's request id."""

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelyard.core.errors import ConfigError
from modelyard.serving.context import RequestContext
from modelyard.serving.log_json import MAX_JSON_CHARS, to_json
from modelyard.serving.metrics import ServiceMetrics
from modelyard.serving.prediction_log import (
    PredictionLog,
    PredictionRecord,
    dead_letters,
    predictions,
)
from postgres_server import PostgresServer
from test_prediction_log import record, wait_for

MODEL = "nilm-seq2point"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL with no prediction tables yet: a SQLite file, or a real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/predictions.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    drop_tables(server.url)
    yield server.url
    drop_tables(server.url)


def drop_tables(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for table in ("predictions", "prediction_dead_letters"):
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def table(url: str, which: sa.Table) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.select(which).order_by(which.c.id)))
    finally:
        engine.dispose()


def stored_ids(url: str) -> list[str]:
    return [row.request_id for row in table(url, predictions)]


def poison(number: int, **changes: Any) -> PredictionRecord:
    """A record built like the service builds one, with values no database column can hold."""
    valid = record(number)
    values = {name: getattr(valid, name) for name in ("request_id", "model", "version", "route")}
    values |= {"status": 200, "latency_ms": 1.0, "inputs": {}, "outputs": {}}
    return PredictionRecord(**(values | changes))


# --- poison records never block the others ----------------------------------------------------


def test_values_json_refuses_are_stored_in_a_safe_form(database: str, tmp_path: Path) -> None:
    """The issue's request: a zip code above 64 bits (and a lone surrogate, NaN, a huge text)
    reached the log and stalled it for good. They are now stored, written as text."""
    log = PredictionLog(database, spool_dir=tmp_path / "spool", batch_size=20, model=MODEL)
    log.start()
    log.record(record(0))
    odd = {"zip_code": 18446744073709551616, "side": "\ud800", "area": float("nan")}
    log.record(poison(1, inputs=[odd], outputs={"huge": "x" * (MAX_JSON_CHARS + 10)}))
    log.record(record(2))
    log.close()

    assert stored_ids(database) == ["req-000000", "req-000001", "req-000002"]
    row = table(database, predictions)[1]
    assert row.inputs == [{"zip_code": "18446744073709551616", "side": "?", "area": None}]
    assert row.outputs["truncated"] is True and row.outputs["chars"] > MAX_JSON_CHARS
    assert log.stats.dead_letters == 0 and log.stats.written == 3


def test_shutdown_with_the_database_down_spools_odd_values_too(tmp_path: Path) -> None:
    """The issue's shutdown: with the database down, a record holding a 65-bit integer made
    the spool itself crash and every buffered record was lost. All are spooled now, and
    replayed once the database is back."""
    url = f"sqlite:///{tmp_path}/later/predictions.db"
    spool = tmp_path / "spool"
    first = PredictionLog(url, spool_dir=spool, retry_max_s=0.2, model=MODEL)
    first.start()
    for number in range(30):
        odd = poison(number, inputs={"zip_code": 18446744073709551616}) if number == 4 else None
        first.record(odd or record(number))
    first.close(timeout_s=2)
    assert first.stats.spooled == 30 and first.stats.lost == 0

    (tmp_path / "later").mkdir()
    second = PredictionLog(url, spool_dir=spool, model=MODEL)
    second.start()
    wait_for(lambda: second.stats.replayed == 30)
    second.close()
    assert stored_ids(url) == [f"req-{n:06d}" for n in range(30)]


def test_a_record_the_database_refuses_becomes_a_dead_letter(
    database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Among valid records in one batch, one the database cannot store (an integer column out
    of range): every valid one is stored, the poison is in the dead-letter table, counted in
    the metric and logged once; the database is still reported up."""
    log = PredictionLog(database, spool_dir=tmp_path / "spool", batch_size=50, model=MODEL)
    log.start()
    for number in range(40):
        log.record(poison(number, status=2**70) if number in {7, 23} else record(number))
    with caplog.at_level(logging.WARNING, "modelyard.serving.prediction_log"):
        wait_for(lambda: log.stats.written + log.stats.dead_letters == 40)
    for number in range(40, 60):  # and the log keeps going in batches
        log.record(record(number))
    log.close()

    valid = [f"req-{n:06d}" for n in range(60) if n not in {7, 23}]
    assert stored_ids(database) == valid
    letters = table(database, dead_letters)
    assert [letter.request_id for letter in letters] == ["req-000007", "req-000023"]
    assert all(letter.error and letter.model == MODEL for letter in letters)
    assert json.loads(letters[0].record)["status"] == str(2**70)
    assert log.stats.dead_letters == 2 and log.stats.written == 58 and log.stats.database_ok
    refused = [r for r in caplog.records if "refused by the database" in r.getMessage()]
    assert len(refused) == 2
    metrics = ServiceMetrics()
    metrics.update_log(log.stats)
    exposition = metrics.exposition()
    assert b'modelyard_prediction_log_records_total{outcome="dead_letter"} 2.0' in exposition
    assert b'modelyard_prediction_log_records_total{outcome="written"} 58.0' in exposition


def test_poison_lines_in_a_spool_file_do_not_block_it(database: str, tmp_path: Path) -> None:
    """A spool file with a broken line and a refused record among valid ones is replayed: the
    valid records are stored, the others are dead letters, the file is gone."""
    spool = tmp_path / "spool"
    owned = PredictionLog(database, spool_dir=spool, model=MODEL).spool_dir
    lines = [record(n).to_json() for n in range(10)]
    lines[3] = '{"request_id": "broken", "stat'
    lines[5] = json.dumps(json.loads(lines[5]) | {"status": [200]})  # wrong type
    refused = json.loads(record(6).to_json()) | {"status": 2**70}  # as an older version wrote
    lines[6] = json.dumps(refused)
    # above the largest pid Linux hands out: a process that is gone
    (owned / "spool-4194305.jsonl").write_text("\n".join(lines) + "\n")

    log = PredictionLog(database, spool_dir=spool, batch_size=4, model=MODEL)
    assert log.stats.spool_pending == 10
    log.start()
    log.record(record(10))
    wait_for(lambda: log.stats.written == 8)
    log.close()

    assert stored_ids(database) == [f"req-{n:06d}" for n in (0, 1, 2, 4, 7, 8, 9, 10)]
    assert sorted(letter.request_id for letter in table(database, dead_letters)) == [
        "req-000006",
        "unknown",
        "unknown",
    ]
    assert log.stats.dead_letters == 3 and log.stats.replayed == 7
    assert not list(owned.glob("spool-*"))


def test_a_table_dropped_while_running_is_waited_for_not_dead_lettered(
    database: str, tmp_path: Path
) -> None:
    """A missing table is the operator's problem, not the records': nothing becomes a dead
    letter, the table is created again and the records are stored."""
    log = PredictionLog(database, spool_dir=tmp_path / "spool", retry_max_s=0.2, model=MODEL)
    log.start()
    log.record(record(0))
    wait_for(lambda: log.stats.written == 1)
    engine = sa.create_engine(database)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE predictions"))
    engine.dispose()
    for number in range(1, 11):
        log.record(record(number))
    wait_for(lambda: log.stats.written == 11)
    log.close()
    assert stored_ids(database) == [f"req-{n:06d}" for n in range(1, 11)]
    assert log.stats.dead_letters == 0


def test_a_spool_file_that_cannot_be_read_does_not_stop_the_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/predictions.db"
    owned = PredictionLog(url, spool_dir=tmp_path / "spool", model=MODEL).spool_dir
    (owned / "spool-4194305.jsonl").mkdir()  # a directory where a file should be
    log = PredictionLog(url, spool_dir=tmp_path / "spool", batch_size=2, model=MODEL)
    log.start()
    for number in range(5):
        log.record(record(number))
    wait_for(lambda: log.stats.written == 5)
    log.close()
    assert stored_ids(url) == [f"req-{n:06d}" for n in range(5)]


def test_the_json_of_a_log_record_never_fails() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert to_json({"n": 2**64}) == '{"n":"18446744073709551616"}'
    assert (
        to_json({"n": -(2**63), "m": 2**64 - 1})
        == '{"n":-9223372036854775808,"m":18446744073709551615}'
    )
    assert to_json([float("inf"), "a\ud800b"]) == '[null,"a?b"]'
    assert '"<nested too deeply>"' in to_json(cycle)
    assert to_json({1: Unprintable()}) == '{"1":"<unprintable Unprintable>"}'


# --- the spool belongs to one database and one model ------------------------------------------


def test_a_spool_is_replayed_only_into_its_own_database_and_model(tmp_path: Path) -> None:
    """Two servers whose SQLite files lie side by side share the spool directory beside them;
    each replays only what it spooled itself (the issue: a NILM server wrote avm rows)."""
    spool = tmp_path / "spool"
    avm_url = f"sqlite:///{tmp_path}/later/avm.db"  # its directory does not exist yet: down
    avm = PredictionLog(avm_url, spool_dir=spool, retry_max_s=0.2, model="avm")
    avm.start()
    for number in range(20):
        avm.record(poison(number, model="avm"))
    avm.close(timeout_s=2)
    assert avm.stats.spooled == 20

    for url, model in ((f"sqlite:///{tmp_path}/nilm.db", MODEL), (avm_url, "other-model")):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(exist_ok=True)
        other = PredictionLog(url, spool_dir=spool, model=model)
        assert other.stats.spool_pending == 0
        other.start()
        other.record(record(100))
        wait_for(lambda log=other: log.stats.written == 1)  # type: ignore[misc]
        other.close()
        assert stored_ids(url)[-1] == "req-000100" and other.stats.replayed == 0
    assert stored_ids(f"sqlite:///{tmp_path}/nilm.db") == ["req-000100"]

    owner = json.loads((avm.spool_dir / "owner.json").read_text())
    assert owner == {"database": f"sqlite:///{tmp_path}/later/avm.db", "model": "avm"}
    again = PredictionLog(avm_url, spool_dir=spool, model="avm")  # its owner replays it
    again.start()
    wait_for(lambda: again.stats.replayed == 20)
    again.close()
    assert stored_ids(avm_url) == ["req-000100", *[f"req-{n:06d}" for n in range(20)]]


def test_the_owner_record_has_no_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://user:secret@127.0.0.1:1/db"
    log = PredictionLog(url, spool_dir=tmp_path, model=MODEL)
    text = (log.spool_dir / "owner.json").read_text()
    assert "secret" not in text and "user:***@127.0.0.1:1/db" in text
    rotated = PredictionLog(url.replace("secret", "new"), spool_dir=tmp_path, model=MODEL)
    assert rotated.spool_dir == log.spool_dir  # a new password is the same database


def test_a_spool_directory_of_another_owner_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    owned = PredictionLog(url, spool_dir=tmp_path, model=MODEL).spool_dir
    (owned / "owner.json").write_text('{"database": "sqlite:////elsewhere.db", "model": "avm"}')
    with pytest.raises(ConfigError, match=r"belongs to .*elsewhere\.db"):
        PredictionLog(url, spool_dir=tmp_path, model=MODEL)


def test_an_unwritable_spool_directory_is_refused_at_start(tmp_path: Path) -> None:
    """As root, permissions do not stop writes: a regular file where the directory should be
    does."""
    blocked = tmp_path / "spool"
    blocked.write_text("not a directory")
    with pytest.raises(ConfigError) as refused:
        PredictionLog(f"sqlite:///{tmp_path}/p.db", spool_dir=blocked, model=MODEL)
    message = str(refused.value)
    assert "\n" not in message
    assert f"spool directory {blocked}/" in message and "is not writable" in message


def test_a_spool_directory_lost_while_running_falls_back_and_says_where(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database is down and the spool directory is replaced by a file while the server
    runs: at shutdown the buffer goes to the fallback spool, whose path is logged at error
    level; the next start replays it."""
    url = f"sqlite:///{tmp_path}/later/predictions.db"
    log = PredictionLog(url, spool_dir=tmp_path / "spool", retry_max_s=0.2, model=MODEL)
    shutil.rmtree(log.spool.fallback, ignore_errors=True)
    log.start()
    for number in range(200):
        log.record(record(number))
    shutil.rmtree(log.spool_dir)
    log.spool_dir.write_text("in the way")
    try:
        with caplog.at_level(logging.ERROR, "modelyard.serving.prediction_log"):
            log.close(timeout_s=2)
        assert log.stats.spooled_fallback == 200 and log.stats.lost == 0
        saved = log.spool.fallback / f"spool-{os.getpid()}.jsonl"
        assert len(saved.read_text().splitlines()) == 200
        assert any(str(saved) in r.getMessage() for r in caplog.records if r.levelname == "ERROR")

        log.spool_dir.unlink()
        (tmp_path / "later").mkdir()
        again = PredictionLog(url, spool_dir=tmp_path / "spool", model=MODEL)
        assert again.stats.spool_pending == 200
        again.start()
        wait_for(lambda: again.stats.written == 200)
        again.close()
        assert stored_ids(url) == [f"req-{n:06d}" for n in range(200)]
    finally:
        shutil.rmtree(log.spool.fallback, ignore_errors=True)


# --- the server's own request id ---------------------------------------------------------------

OLD_SCHEMA = """CREATE TABLE predictions (
    id {id} PRIMARY KEY, request_id VARCHAR(64) NOT NULL,
    created_at TIMESTAMP {tz} NOT NULL, model VARCHAR(200) NOT NULL,
    version VARCHAR(64) NOT NULL, route VARCHAR(100) NOT NULL, status INTEGER NOT NULL,
    latency_ms FLOAT NOT NULL, inputs {json} NOT NULL, outputs {json} NOT NULL)"""


def test_a_table_of_the_previous_version_gains_the_server_request_id(
    database: str, tmp_path: Path
) -> None:
    sqlite = database.startswith("sqlite")
    ddl = OLD_SCHEMA.format(
        id="INTEGER" if sqlite else "BIGSERIAL", tz="" if sqlite else "WITH TIME ZONE",
        json="JSON",
    )  # fmt: skip
    engine = sa.create_engine(database)
    with engine.begin() as connection:
        connection.execute(sa.text(ddl))
        connection.execute(
            sa.text(
                "INSERT INTO predictions (request_id, created_at, model, version, route, status, "
                "latency_ms, inputs, outputs) VALUES ('old', CURRENT_TIMESTAMP, 'm', 'v', "
                "'/predict', 200, 1.0, '{}', '{}')"
            )
        )
    engine.dispose()

    log = PredictionLog(database, spool_dir=tmp_path / "spool", model=MODEL)
    log.start()
    for number in range(3):
        log.record(record(number))
    log.close()

    rows = table(database, predictions)
    assert [r.request_id for r in rows] == ["old", "req-000000", "req-000001", "req-000002"]
    assert rows[0].server_request_id is None
    new_ids = [r.server_request_id for r in rows[1:]]
    assert len(set(new_ids)) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in new_ids)
    duplicate = poison(9, server_request_id=new_ids[0])  # the unique index holds
    log = PredictionLog(database, spool_dir=tmp_path / "spool", model=MODEL)
    log.start()
    log.record(duplicate)
    log.close()
    assert log.stats.dead_letters == 1 and len(table(database, predictions)) == 4


def test_every_request_context_gets_its_own_server_id() -> None:
    ids = {RequestContext(request_id="same").server_request_id for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
