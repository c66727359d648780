"""Fetch dataset files into a local directory without ever leaving a half-written file behind.

``modelyard data fetch`` copies raw data from wherever it lives (an http(s) mirror, a ``file://``
URL or a plain directory) into a project's data folder. Later stages trust whatever they find
there, so the rules below make a fetch safe to re-run or interrupt at any moment:

* each file is streamed into a hidden temp file beside its final path, fsynced, checked and only
  then renamed into place, so a reader never sees a partial or unverified file;
* a file is checked before the rename (its sha256 when one is known, otherwise a full streaming
  decode for gzip files), so a bad transfer never replaces anything;
* files already present and valid are skipped, so a second run costs only the hashing.
"""

import contextlib
import gzip
import hashlib
import http.client
import os
import re
import secrets
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlparse
from urllib.request import Request, url2pathname, urlopen

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from modelyard.core.errors import DataError
from modelyard.core.hashing import sha256_file

# Small enough that the progress bar moves on slow links, large enough to keep syscalls cheap.
_CHUNK = 256 * 1024
_GZIP_SUFFIXES = (".gz", ".gzip")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_USER_AGENT = "modelyard-fetch"


@dataclass(frozen=True)
class FileSpec:
    """One file to fetch.

    ``path`` is where the file lands, relative to the destination. ``remote`` is its name at the
    source when that differs (mirrors often use flat or differently cased names). ``sha256``, when
    known, is the checksum the file must match before it is accepted.
    """

    path: str
    remote: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class FetchReport:
    """What a fetch did: which files it wrote, which it left alone, and how many bytes it moved."""

    destination: Path
    fetched: list[str]
    skipped: list[str]
    total_bytes: int


@dataclass(frozen=True)
class _Stream:
    """An open source file, with its size when the source tells us, and a name for messages."""

    handle: BinaryIO
    size: int | None
    label: str


@dataclass(frozen=True)
class _HttpSource:
    """A base URL under which every listed file is served."""

    base: str
    timeout_s: float

    def url_for(self, spec: FileSpec) -> str:
        """Build the file's URL, quoting unsafe characters but keeping existing %-escapes."""
        return f"{self.base.rstrip('/')}/{quote(spec.remote or spec.path, safe='/%')}"

    def list_files(self) -> list[FileSpec]:
        """Refuse: a web server offers no portable way to list a directory."""
        raise DataError(f"an http source needs a file list: cannot list the files at {self.base}")

    @contextlib.contextmanager
    def open(self, spec: FileSpec) -> Iterator[_Stream]:
        """Open the file's URL, turning every way a request can fail into a DataError."""
        url = self.url_for(spec)
        request = Request(url, headers={"User-Agent": _USER_AGENT})
        try:
            response: http.client.HTTPResponse = urlopen(request, timeout=self.timeout_s)
        except HTTPError as err:
            err.close()
            raise DataError(f"HTTP {err.code} {err.reason} for {url}") from err
        except URLError as err:
            raise DataError(f"cannot reach {url}: {err.reason}") from err
        except (OSError, http.client.HTTPException) as err:
            raise DataError(f"cannot reach {url}: {_describe(err)}") from err
        with response:
            yield _Stream(response, _content_length(response), url)


@dataclass(frozen=True)
class _DirSource:
    """A local directory (given as a path or a ``file://`` URL) holding the files."""

    root: Path

    def check(self) -> None:
        """Fail early, naming the directory, rather than once per missing file."""
        if not self.root.exists():
            raise DataError(f"source directory not found: {self.root}")
        if not self.root.is_dir():
            raise DataError(f"source is not a directory: {self.root}")

    def list_files(self) -> list[FileSpec]:
        """List every regular file below the root, skipping hidden files and directories."""
        found: list[str] = []
        for current, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            base = Path(current)
            for name in filenames:
                path = base / name
                if not name.startswith(".") and path.is_file():
                    found.append(path.relative_to(self.root).as_posix())
        if not found:
            raise DataError(f"source directory {self.root} contains no files to fetch")
        return [FileSpec(path=rel) for rel in sorted(found)]

    def locate(self, spec: FileSpec) -> Path:
        """Find the file under its local name first, then under its remote name."""
        tried = [self.root / spec.path]
        if spec.remote:
            tried.append(self.root / spec.remote)
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise DataError(
            f"{spec.path} not found in source {self.root}: tried "
            + " and ".join(str(path) for path in tried)
        )

    @contextlib.contextmanager
    def open(self, spec: FileSpec) -> Iterator[_Stream]:
        """Open the located file for reading."""
        path = self.locate(spec)
        try:
            handle = path.open("rb")
        except OSError as err:
            raise DataError(f"cannot read {path}: {_describe(err)}") from err
        with handle:
            yield _Stream(handle, os.fstat(handle.fileno()).st_size, str(path))


_Source = _HttpSource | _DirSource


class _Meter:
    """Byte counters for one fetch: an overall bar plus one bar for the file in flight.

    The overall total grows as file sizes become known (an http server only reveals a size when
    the download starts), so the bar always reflects the bytes we know about.
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._overall = progress.add_task("all files", total=None)
        self._known_total = 0

    @contextlib.contextmanager
    def file(self, name: str, size: int | None) -> Iterator[Callable[[int], None]]:
        """Show a bar for one file and yield a callback that records transferred bytes."""
        if size is not None:
            self._known_total += size
            self._progress.update(self._overall, total=self._known_total)
        task = self._progress.add_task(name, total=size)

        def advance(count: int) -> None:
            self._progress.advance(task, count)
            self._progress.advance(self._overall, count)

        try:
            yield advance
        finally:
            self._progress.remove_task(task)


def fetch_dataset(
    source: str,
    destination: Path,
    files: Sequence[FileSpec] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    timeout_s: float = 60.0,
) -> FetchReport:
    """Fetch ``files`` (or, for a local source, every file) from ``source`` into ``destination``.

    ``source`` is an http(s) base URL, a ``file://`` URL or a local directory. Files already
    present and valid are skipped unless ``force`` is set. Raises :class:`DataError` for any
    problem with the source, the transfer, a checksum or the destination.
    """
    origin = _parse_source(source, timeout_s)
    specs = _resolve_specs(origin, files)
    dest = _prepare_destination(destination)
    fetched: list[str] = []
    skipped: list[str] = []
    total_bytes = 0
    with _progress_bar(enabled=progress) as bar:
        meter = _Meter(bar)
        for spec in specs:
            target = _target_path(dest, spec)
            if not force and _is_current(target, spec):
                skipped.append(spec.path)
                continue
            total_bytes += _fetch_one(origin, spec, target, meter)
            fetched.append(spec.path)
    return FetchReport(dest, fetched, skipped, total_bytes)


def _parse_source(source: str, timeout_s: float) -> _Source:
    """Decide what kind of source a string names; anything without a scheme is a local path."""
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not parsed.netloc:
            raise DataError(f"source URL has no host: {source}")
        return _HttpSource(source, timeout_s)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DataError(f"file:// source must be on this machine, got host {parsed.netloc}")
        return _DirSource(Path(url2pathname(parsed.path)))
    if "://" in source:
        raise DataError(
            f"unsupported source scheme {scheme!r} in {source}: use http(s), file or a path"
        )
    return _DirSource(Path(source).expanduser())


def _resolve_specs(origin: _Source, files: Sequence[FileSpec] | None) -> list[FileSpec]:
    """Validate the file list, or derive it from a local source when none was given."""
    if isinstance(origin, _DirSource):
        origin.check()
    specs = origin.list_files() if files is None else list(files)
    seen: set[str] = set()
    for spec in specs:
        _check_relative(spec.path)
        if spec.sha256 is not None and not _SHA256_RE.fullmatch(spec.sha256):
            raise DataError(f"sha256 for {spec.path} is not 64 hex digits: {spec.sha256!r}")
        if spec.path in seen:
            raise DataError(f"file {spec.path} is listed more than once")
        seen.add(spec.path)
    return specs


def _prepare_destination(destination: Path) -> Path:
    """Create the destination directory; refuse one that is already a file."""
    dest = destination.expanduser()
    if dest.exists() and not dest.is_dir():
        raise DataError(f"destination {dest} exists and is not a directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create destination {dest}: {_describe(err)}") from err
    return dest


def _check_relative(path: str) -> None:
    """Refuse a file path that would land outside the destination (or be the destination)."""
    rel = PurePosixPath(path)
    if not rel.parts or rel.is_absolute() or ".." in rel.parts:
        raise DataError(
            f"file path {path!r} must be relative and stay inside the destination directory"
        )


def _target_path(dest: Path, spec: FileSpec) -> Path:
    """Map a (checked) posix-style spec path to its final location under ``dest``."""
    return dest.joinpath(*PurePosixPath(spec.path).parts)


def _is_current(target: Path, spec: FileSpec) -> bool:
    """Tell whether ``target`` already holds the right file.

    A present file whose checksum is wrong is deleted here: it is known to be bad, and removing it
    keeps the promise that a failed fetch leaves nothing at that path.
    """
    if not target.exists():
        return False
    if not target.is_file():
        raise DataError(f"destination {target} exists and is not a regular file")
    if spec.sha256 is None or sha256_file(target) == spec.sha256.lower():
        return True
    target.unlink()
    return False


def _fetch_one(origin: _Source, spec: FileSpec, target: Path, meter: _Meter) -> int:
    """Transfer one file into place and return its size in bytes."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create directory for {target}: {_describe(err)}") from err
    with origin.open(spec) as stream, meter.file(spec.path, stream.size) as advance:
        return _write_verified(stream, spec, target, advance)


def _write_verified(
    stream: _Stream, spec: FileSpec, target: Path, advance: Callable[[int], None]
) -> int:
    """Stream into a temp file beside ``target``, check it, then atomically rename it into place.

    Any exception (KeyboardInterrupt included) removes the temp file, so an interrupted fetch
    leaves neither partial nor temp files.
    """
    tmp, handle = _create_temp(target)
    try:
        with handle:
            digest, written = _copy(stream, handle, advance)
            handle.flush()
            os.fsync(handle.fileno())
        _check_size(stream, written)
        _check_content(tmp, spec, stream.label, digest)
        tmp.replace(target)  # os.replace: atomic on POSIX and Windows
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise DataError(f"cannot write {target}: {_describe(err)}") from err
        raise
    _fsync_dir(target.parent)
    return written


def _create_temp(target: Path) -> tuple[Path, BinaryIO]:
    """Create a hidden temp file in the target's directory so the final rename is atomic.

    ``open(..., "xb")`` rather than :func:`tempfile.mkstemp` keeps the usual umask-based mode
    instead of 0600 on the final file.
    """
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.part-{secrets.token_hex(4)}")
        try:
            return tmp, tmp.open("xb")
        except FileExistsError:
            continue
        except OSError as err:
            raise DataError(f"cannot write {target}: {_describe(err)}") from err
    raise DataError(f"cannot create a temp file beside {target}")


def _copy(stream: _Stream, out: BinaryIO, advance: Callable[[int], None]) -> tuple[str, int]:
    """Copy the stream in chunks, hashing on the way so the data is read only once."""
    digest = hashlib.sha256()
    written = 0
    for chunk in _chunks(stream):
        out.write(chunk)
        digest.update(chunk)
        written += len(chunk)
        advance(len(chunk))
    return digest.hexdigest(), written


def _chunks(stream: _Stream) -> Iterator[bytes]:
    """Yield the stream's chunks, turning read failures mid-transfer into a DataError."""
    while True:
        try:
            chunk = stream.handle.read(_CHUNK)
        except (OSError, http.client.HTTPException) as err:
            raise DataError(f"transfer of {stream.label} failed: {_describe(err)}") from err
        if not chunk:
            return
        yield chunk


def _check_size(stream: _Stream, written: int) -> None:
    """Catch a connection closed early: urllib returns a short body without complaint."""
    if stream.size is not None and written != stream.size:
        raise DataError(
            f"transfer of {stream.label} is truncated: got {written} of {stream.size} bytes"
        )


def _check_content(tmp: Path, spec: FileSpec, label: str, digest: str) -> None:
    """Check the sha256 when known; otherwise fully decode gzip files to catch corruption."""
    if spec.sha256 is not None:
        expected = spec.sha256.lower()
        if digest != expected:
            raise DataError(
                f"checksum mismatch for {spec.path} (from {label}): "
                f"expected sha256 {expected}, got {digest}"
            )
    elif _is_gzip_name(spec):
        _check_gzip(tmp, spec, label)


def _is_gzip_name(spec: FileSpec) -> bool:
    """Judge by either name, since mirrors may rename ``.gz`` files to ``.gzip`` or back."""
    names = [spec.path, spec.remote or ""]
    return any(name.lower().endswith(_GZIP_SUFFIXES) for name in names)


def _check_gzip(path: Path, spec: FileSpec, label: str) -> None:
    """Decompress the whole file in chunks: a truncated gzip only fails at its very end."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"corrupt gzip: {spec.path} (from {label}): {_describe(err)}") from err


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; without it a crash could lose a file reported as fetched."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """Read Content-Length, ignoring a missing or malformed header rather than failing."""
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _progress_bar(*, enabled: bool) -> Progress:
    """Build a byte-based progress display on stderr, so stdout stays clean for results."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _describe(err: BaseException) -> str:
    """Give a readable reason even for exceptions whose str() is empty."""
    return str(err) or type(err).__name__
