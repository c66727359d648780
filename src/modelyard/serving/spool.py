"""The prediction log's spool: records waiting on local disk, owned by one database and model.

Layout: ``<spool_dir>/<key>/`` where ``key`` is a digest of the database URL (without password;
a SQLite path made absolute), the model name and, for any table but ``predictions`` (the
feedback), the table's name, with ``owner.json`` saying them in words. A log
replays only its own directory, after checking the owner record, so two servers that share a
spool directory (their SQLite files side by side) never write each other's records into their
databases. The model version is not part of the owner: a new version of the same model keeps
replaying what the previous one left for the same table.

In the directory each process appends to its own file, ``spool-<pid>.jsonl``, so several workers
never write the same file. Replaying claims a file by renaming it to
``spool-<pid>-<n>.replaying`` (one rename: two workers cannot both claim it); files of processes
that are gone (a previous run, a crashed worker) are claimed the same way. Records the database
refused and that could not go into its dead-letter table go to ``dead-letters-<pid>.jsonl``,
which is never replayed.

When the spool directory cannot be written (it was removed or replaced while the server ran),
records go to the same layout under the system's temporary directory instead, and that path is
logged at error level; the log replays that directory too.
"""

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from modelyard.core.errors import ConfigError
from modelyard.serving.log_schema import TABLE

logger = logging.getLogger("modelyard.serving.prediction_log")

OWNER_FILE = "owner.json"
_PROBE = ".write-probe-{pid}"


def database_identity(url: str) -> str:
    """The URL with its password masked (a SQLite file path made absolute): who owns a spool."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        parsed = parsed.set(database=str(Path(database).resolve()))
    return parsed.render_as_string(hide_password=True)  # the same key after a password change


def spool_owner(url: str, model: str, table: str = TABLE) -> dict[str, str]:
    """Who owns a spool: the database and model, and the table for any but ``predictions`` (so
    that prediction spools written before other tables had spools keep their owner)."""
    owner = {"database": database_identity(url), "model": model}
    return owner if table == TABLE else owner | {"table": table}


def spool_key(owner: dict[str, str]) -> str:
    text = json.dumps(owner, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Spool:
    """The spool files of one prediction log (see the module docstring)."""

    def __init__(self, base: Path, url: str, model: str, table: str = TABLE) -> None:
        self.owner = spool_owner(url, model, table)
        key = spool_key(self.owner)
        self.base = Path(base)
        self.directory = self.base / key
        self.fallback = Path(tempfile.gettempdir()) / f"modelyard-spool-{os.getuid()}" / key
        self._claims = 0
        self._warned: set[Path] = set()
        self.lock = threading.Lock()

    # -- start -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the directory, record its owner and prove it writable; a ConfigError (one line)
        says why not."""
        check_writable(self.directory)
        recorded = _read_owner(self.directory)
        if recorded is None:  # new, or a write cut short
            with _as_config_error(self.directory):
                _write_synced(self.directory / OWNER_FILE, json.dumps(self.owner) + "\n")
        elif recorded != self.owner:
            raise ConfigError(
                f"prediction log: spool directory {self.directory} belongs to {recorded}, "
                f"not to {self.owner}; move it away"
            )
        self._warn_about_unowned_files()

    def _warn_about_unowned_files(self) -> None:
        """Spool files of an earlier version lie directly in the base directory; their database
        is not known, so they are left for an operator instead of being replayed blindly."""
        with contextlib.suppress(OSError):
            loose = [p for p in self.base.glob("spool-*") if p.is_file()]
            if loose:
                logger.warning(
                    "prediction log: %d spool file(s) in %s have no owner record and are not "
                    "replayed; move those of this database and model into %s",
                    len(loose),
                    self.base,
                    self.directory,
                )

    # -- writing ---------------------------------------------------------------------------
    def append(self, lines: list[str]) -> Path:
        """Append ``lines`` to this process's file; in the fallback directory (logged at error
        level) when the spool directory cannot be written. OSError when neither can."""
        with self.lock:
            try:
                return _append(self.directory, f"spool-{os.getpid()}.jsonl", lines)
            except OSError as exc:
                first = exc
            self._ensure_fallback()
            path = _append(self.fallback, f"spool-{os.getpid()}.jsonl", lines)
        logger.error(
            "prediction log: spool directory %s is not writable (%s); %d record(s) saved to %s",
            self.directory,
            first.strerror or first,
            len(lines),
            path,
        )
        return path

    def append_dead_letters(self, lines: list[str]) -> Path:
        """Dead letters the database would not take: kept on disk, never replayed."""
        with self.lock:
            name = f"dead-letters-{os.getpid()}.jsonl"
            try:
                return _append(self.directory, name, lines)
            except OSError:
                self._ensure_fallback()
                return _append(self.fallback, name, lines)

    def _ensure_fallback(self) -> None:
        self.fallback.mkdir(parents=True, exist_ok=True)
        if _read_owner(self.fallback) is None:
            _write_synced(self.fallback / OWNER_FILE, json.dumps(self.owner) + "\n")

    # -- replaying -------------------------------------------------------------------------
    def _owned_directories(self) -> list[Path]:
        """This log's directories whose owner record says so (a mismatch is logged, skipped)."""
        owned = []
        for directory in (self.directory, self.fallback):
            owner = _read_owner(directory)
            if owner is None:
                continue
            if owner == self.owner:
                owned.append(directory)
            elif directory not in self._warned:
                self._warned.add(directory)
                logger.warning("prediction log: %s belongs to %s; not replayed", directory, owner)
        return owned

    def claimable(self) -> list[Path]:
        """Spool files this process may replay: its own and those of processes that are gone."""
        me = os.getpid()
        found: list[Path] = []
        for directory in self._owned_directories():
            with contextlib.suppress(OSError):
                found += [
                    path
                    for path in sorted(directory.glob("spool-*"))
                    if path.suffix in {".jsonl", ".replaying"}
                    and ((pid := file_pid(path)) == me or not _alive(pid))
                ]
        return found

    def count(self) -> int:
        """Records waiting in claimable files."""
        total = 0
        for path in self.claimable():
            with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as f:
                total += sum(1 for line in f if line.strip())
        return total

    def claim(self, path: Path) -> Path | None:
        """Rename ``path`` to a name owned by this process; None if another one was faster."""
        with self.lock:
            if path.suffix == ".replaying" and file_pid(path) == os.getpid():
                return path
            self._claims += 1
            target = path.parent / f"spool-{os.getpid()}-{self._claims}.replaying"
            try:
                path.replace(target)
            except FileNotFoundError:
                return None
            return target

    @staticmethod
    def keep_only(claimed: Path, lines: Iterable[str]) -> None:
        """Rewrite a claimed file with the lines not yet stored (atomically: all or nothing)."""
        partial = claimed.with_suffix(".partial")
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        partial.replace(claimed)


def check_writable(directory: Path) -> None:
    """Create ``directory`` and write, sync and remove a probe file in it: a ConfigError (one
    line) when that fails, at start rather than when records need the spool."""
    with _as_config_error(directory):
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / _PROBE.format(pid=os.getpid())
        _write_synced(probe, "probe\n")
        probe.unlink()


@contextlib.contextmanager
def _as_config_error(directory: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"prediction log: spool directory {directory} is not writable ({reason}); "
            "make it writable or set spool_dir to a local directory that is"
        ) from None


def _read_owner(directory: Path) -> dict[str, str] | None:
    """The owner record of a spool directory; None when absent or unreadable."""
    try:
        owner = json.loads((directory / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _append(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / name
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
        handle.flush()
    return path


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def file_pid(path: Path) -> int:
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
