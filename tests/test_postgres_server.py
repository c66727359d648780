"""tests/postgres_server.py on a given server ($MODELYARD_TEST_POSTGRES_URL, CI's service
container): a database of its own per use, a real outage by stop(), gone afterwards; and the
local server stays the default when the variable is unset."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from postgres_server import (
    EXTERNAL_URL_ENV,
    LocalPostgresServer,
    local_postgres_server,
    local_unavailable,
    postgres_server,
)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgresServer]:
    """A real server started here, standing in for the service container."""
    reason = local_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with local_postgres_server() as started:
        yield started


def databases(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as connection:
        names = connection.execute(sa.text("SELECT datname FROM pg_database")).scalars()
        return set(names)


def test_a_given_server_gets_a_database_per_use_that_is_dropped_afterwards(
    server: LocalPostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXTERNAL_URL_ENV, server.url)
    before = databases(server.url)
    with postgres_server() as first, postgres_server() as second:
        assert first.url != second.url
        assert sa.make_url(first.url).port == server.port  # no server of its own
        engine = sa.create_engine(first.url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE marker (n integer)"))
        other = sa.create_engine(second.url, poolclass=sa.NullPool)
        with other.connect() as connection:
            tables = connection.execute(sa.text("SELECT tablename FROM pg_tables")).scalars()
            assert "marker" not in set(tables)
        assert len(databases(server.url) - before) == 2
    assert databases(server.url) == before


def test_stop_is_an_outage_of_that_database_and_start_ends_it(
    server: LocalPostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXTERNAL_URL_ENV, server.url)
    with postgres_server() as database:
        engine = sa.create_engine(database.url, poolclass=sa.NullPool)
        with engine.connect() as open_connection:
            database.stop()
            with pytest.raises(sa.exc.OperationalError):  # the session was terminated
                open_connection.execute(sa.text("SELECT 1"))
        with pytest.raises(sa.exc.OperationalError, match="not currently accepting"):
            engine.connect()
        database.start()
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1


def test_without_the_variable_a_local_server_is_started(
    server: LocalPostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(EXTERNAL_URL_ENV, raising=False)
    with postgres_server() as started:
        assert isinstance(started, LocalPostgresServer)
        assert started.port != server.port
        assert "postgres" in databases(started.url)
