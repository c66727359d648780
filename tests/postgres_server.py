"""A real PostgreSQL server for tests: initdb in a temporary directory, 127.0.0.1 only.

Uses the Debian ``postgresql`` package's binaries (``make test`` installs it when missing).
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user.

When ``$MODELYARD_TEST_POSTGRES_URL`` names a server instead (CI's PostgreSQL service container,
.github/workflows/ci.yml), each use gets a fresh database there, dropped afterwards, and no
local server is started. Its "outage" is real too: ``stop()`` closes the database to new
connections and terminates the open ones (what clients see of a fast shutdown: the server ends
their sessions, new connections are refused), ``start()`` opens it again.
"""

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

#: A SQLAlchemy URL of a PostgreSQL server to use instead of starting one (user allowed to
#: create databases), e.g. postgresql+psycopg://postgres:postgres@postgres:5432/postgres.
EXTERNAL_URL_ENV = "MODELYARD_TEST_POSTGRES_URL"

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def binary(name: str) -> str | None:
    for directory in BIN_DIRS:
        if (directory / name).is_file():
            return str(directory / name)
    return shutil.which(name)


class PostgresServer(Protocol):
    """What the tests use of a server: its URL, and taking it down and up again."""

    url: str

    def stop(self) -> None: ...

    def start(self) -> None: ...


def external_url() -> str | None:
    return os.environ.get(EXTERNAL_URL_ENV) or None


def _psycopg_missing() -> str | None:
    with contextlib.suppress(ImportError):
        import psycopg  # noqa: F401

        return None
    return "psycopg is not installed (pip install 'modelyard[postgres]')"


def available() -> str | None:
    """None when a server is given or can be started here, else the reason it cannot."""
    if external_url() is not None:
        return _psycopg_missing()
    return local_unavailable()


def local_unavailable() -> str | None:
    """None when a server can be started here, else the reason it cannot."""
    if binary("initdb") is None or binary("pg_ctl") is None:
        return "PostgreSQL binaries not found (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server"
    return _psycopg_missing()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPostgresServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        initdb = binary("initdb")
        assert initdb is not None
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        pg_ctl = binary("pg_ctl")
        assert pg_ctl is not None
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        pg_ctl = binary("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def is_up(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


class ExternalDatabase:
    """A database of its own on the server of ``$MODELYARD_TEST_POSTGRES_URL``."""

    def __init__(self, server_url: str) -> None:
        import sqlalchemy as sa

        server = sa.make_url(server_url)
        self.name = f"modelyard_test_{uuid.uuid4().hex[:12]}"
        self.url = server.set(database=self.name).render_as_string(hide_password=False)
        self._admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)

    def _execute(self, *statements: str) -> None:
        import sqlalchemy as sa

        with self._admin.connect() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))

    def create(self) -> None:
        self._execute(f'CREATE DATABASE "{self.name}"')

    def stop(self) -> None:
        self._execute(
            f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()",
        )

    def start(self) -> None:
        self._execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def drop(self) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.dispose()


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A database on the server of ``$MODELYARD_TEST_POSTGRES_URL`` when it is set, else a
    server started here; removed afterwards."""
    url = external_url()
    if url is None:
        with local_postgres_server() as server:
            yield server
        return
    database = ExternalDatabase(url)
    database.create()
    try:
        yield database
    finally:
        database.drop()


@contextlib.contextmanager
def local_postgres_server() -> Iterator[LocalPostgresServer]:
    """A started server in its own directory (outside pytest's root-only temp tree, which the
    ``postgres`` user could not enter); removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="modelyard-pg-"))
    root.chmod(0o755)
    server = LocalPostgresServer(root / "server")
    server.init()
    server.start()
    try:
        deadline = time.monotonic() + 30
        while not server.is_up() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
