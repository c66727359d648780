"""Tests for dataset fetching against a real local HTTP server and real directories."""

import gzip
import hashlib
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

import pytest

from conftest import shared_datasets_root
from modelyard.core.errors import DataError
from modelyard.core.fetch import FileSpec, fetch_dataset
from modelyard.core.hashing import sha256_file

SHARED_NILM = shared_datasets_root() / "nilm"


class _Server(ThreadingHTTPServer):
    """A threaded test server with an event that lets stalled handlers finish at teardown."""

    release: threading.Event

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet when a client we deliberately abandoned has gone away."""


class _Handler(SimpleHTTPRequestHandler):
    """Serves a directory, plus a few misbehaving routes for failure cases."""

    server: _Server

    def do_GET(self) -> None:
        if self.path.startswith("/truncated/"):
            self._send_partial()
        elif self.path.startswith("/stall/"):
            self._send_partial()
            self.server.release.wait(5)
        elif self.path.startswith("/slow/"):
            self.server.release.wait(5)
        else:
            super().do_GET()

    def _send_partial(self) -> None:
        """Promise 1000 bytes but send only 10."""
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()

    def log_message(self, format: str, *_args: object) -> None:
        """Keep test output clean."""


@dataclass(frozen=True)
class Served:
    url: str
    root: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "served"
    root.mkdir()
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}", root)
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if ".part-" in path.name]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_http_fetch_uses_remote_names(served: Served, tmp_path: Path) -> None:
    payload = gzip.compress(b"time,power\n1,2\n")
    (served.root / "UKDALE_House2_2013-05.gzip").write_bytes(payload)
    (served.root / "notes.txt").write_bytes(b"hello")
    dest = tmp_path / "dest"
    files = [
        FileSpec("house2/2013-05.csv.gz", remote="UKDALE_House2_2013-05.gzip"),
        FileSpec("notes.txt", sha256=_sha(b"hello")),
    ]

    report = fetch_dataset(served.url + "/", dest, files, progress=True)

    assert (dest / "house2" / "2013-05.csv.gz").read_bytes() == payload
    assert (dest / "notes.txt").read_bytes() == b"hello"
    assert report.fetched == ["house2/2013-05.csv.gz", "notes.txt"]
    assert report.skipped == []
    assert report.total_bytes == len(payload) + 5
    assert report.destination == dest
    assert _leftovers(dest) == []


def test_checksum_mismatch_leaves_nothing(served: Served, tmp_path: Path) -> None:
    (served.root / "a.bin").write_bytes(b"actual")
    dest = tmp_path / "dest"
    wrong = _sha(b"expected")

    with pytest.raises(DataError) as info:
        fetch_dataset(served.url, dest, [FileSpec("a.bin", sha256=wrong)], progress=False)

    message = str(info.value)
    assert "a.bin" in message
    assert wrong in message
    assert _sha(b"actual") in message
    assert not (dest / "a.bin").exists()
    assert _leftovers(dest) == []


def test_http_404_names_url_and_status(served: Served, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="404") as info:
        fetch_dataset(served.url, tmp_path / "dest", [FileSpec("missing.csv")], progress=False)
    assert f"{served.url}/missing.csv" in str(info.value)


def test_connection_refused(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(DataError, match="cannot reach") as info:
        fetch_dataset(url, tmp_path / "dest", [FileSpec("a.csv")], progress=False)
    assert url in str(info.value)


def test_timeout_is_a_data_error(served: Served, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="timed out"):
        fetch_dataset(
            served.url, tmp_path / "dest", [FileSpec("slow/a.csv")], progress=False, timeout_s=0.2
        )


def test_http_source_needs_file_list(served: Served, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs a file list"):
        fetch_dataset(served.url, tmp_path / "dest", progress=False)


def test_local_dir_copies_everything_but_hidden(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / ".cache").mkdir()
    (src / "top.csv").write_text("1")
    (src / "sub" / "deep.csv").write_text("22")
    (src / ".hidden").write_text("no")
    (src / ".cache" / "x.csv").write_text("no")
    dest = tmp_path / "dest"

    report = fetch_dataset(str(src), dest, progress=False)

    assert report.fetched == ["sub/deep.csv", "top.csv"]
    assert report.total_bytes == 3
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "sub/deep.csv",
        "top.csv",
    ]


def test_local_dir_with_file_list_and_remote_fallback(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("a")
    (src / "B_RAW.csv").write_text("b")
    (src / "ignored.csv").write_text("x")
    dest = tmp_path / "dest"
    files = [FileSpec("a.csv"), FileSpec("b/b.csv", remote="B_RAW.csv", sha256=_sha(b"b"))]

    report = fetch_dataset(src.as_uri(), dest, files, progress=False)

    assert report.fetched == ["a.csv", "b/b.csv"]
    assert (dest / "b" / "b.csv").read_text() == "b"
    assert not (dest / "ignored.csv").exists()


def test_local_missing_file_names_both_paths(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(DataError) as info:
        fetch_dataset(str(src), tmp_path / "dest", [FileSpec("a.csv", remote="A.CSV")])
    assert str(src / "a.csv") in str(info.value)
    assert str(src / "A.CSV") in str(info.value)


def test_missing_source_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="source directory not found") as info:
        fetch_dataset(str(missing), tmp_path / "dest", progress=False)
    assert str(missing) in str(info.value)
    assert not (tmp_path / "dest").exists()


def test_destination_that_is_a_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("a")
    dest = tmp_path / "dest"
    dest.write_text("in the way")
    with pytest.raises(DataError, match="not a directory"):
        fetch_dataset(str(src), dest, progress=False)


def test_second_fetch_skips_and_force_refetches(served: Served, tmp_path: Path) -> None:
    (served.root / "a.csv").write_bytes(b"aaa")
    (served.root / "b.csv").write_bytes(b"bbb")
    dest = tmp_path / "dest"
    files = [FileSpec("a.csv", sha256=_sha(b"aaa")), FileSpec("b.csv")]
    fetch_dataset(served.url, dest, files, progress=False)

    again = fetch_dataset(served.url, dest, files, progress=False)
    assert again.fetched == []
    assert again.skipped == ["a.csv", "b.csv"]
    assert again.total_bytes == 0

    forced = fetch_dataset(served.url, dest, files, force=True, progress=False)
    assert forced.fetched == ["a.csv", "b.csv"]
    assert forced.total_bytes == 6


def test_present_file_with_wrong_checksum_is_refetched(served: Served, tmp_path: Path) -> None:
    (served.root / "a.csv").write_bytes(b"good")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.csv").write_bytes(b"stale")

    report = fetch_dataset(
        served.url, dest, [FileSpec("a.csv", sha256=_sha(b"good"))], progress=False
    )

    assert report.fetched == ["a.csv"]
    assert (dest / "a.csv").read_bytes() == b"good"


@pytest.mark.parametrize(
    "payload",
    [gzip.compress(b"x" * 10_000)[:-12], b"not gzip at all"],
    ids=["truncated", "garbage"],
)
def test_corrupt_gzip(served: Served, tmp_path: Path, payload: bytes) -> None:
    (served.root / "d.gzip").write_bytes(payload)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="corrupt gzip"):
        fetch_dataset(served.url, dest, [FileSpec("d.csv.gz", remote="d.gzip")], progress=False)
    assert not (dest / "d.csv.gz").exists()
    assert _leftovers(dest) == []


def test_truncated_transfer_leaves_nothing(served: Served, tmp_path: Path) -> None:
    (served.root / "ok.csv").write_bytes(b"ok")
    dest = tmp_path / "dest"
    files = [FileSpec("ok.csv"), FileSpec("cut.csv", remote="truncated/cut.csv")]

    with pytest.raises(DataError, match="truncated: got 10 of 1000 bytes"):
        fetch_dataset(served.url, dest, files, progress=False)

    assert (dest / "ok.csv").read_bytes() == b"ok"
    assert not (dest / "cut.csv").exists()
    assert _leftovers(dest) == []


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
def test_keyboard_interrupt_leaves_no_partial_file(served: Served, tmp_path: Path) -> None:
    (served.root / "ok.csv").write_bytes(b"ok")
    dest = tmp_path / "dest"
    files = [FileSpec("ok.csv"), FileSpec("stuck.csv", remote="stall/stuck.csv")]

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            fetch_dataset(served.url, dest, files, progress=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert (dest / "ok.csv").read_bytes() == b"ok"
    assert not (dest / "stuck.csv").exists()
    assert _leftovers(dest) == []


@pytest.mark.integration
@pytest.mark.skipif(
    not SHARED_NILM.is_dir(), reason=f"shared NILM datasets not present at {SHARED_NILM}"
)
def test_fetch_shared_ukdale_house2(tmp_path: Path) -> None:
    source_files = sorted(p for p in (SHARED_NILM / "ukdale_house2").iterdir() if p.is_file())
    assert source_files, "ukdale_house2 is empty"
    files = [FileSpec(f"ukdale_house2/{p.name}", sha256=sha256_file(p)) for p in source_files]
    dest = tmp_path / "nilm"

    report = fetch_dataset(str(SHARED_NILM), dest, files, progress=False)

    assert report.fetched == [spec.path for spec in files]
    assert report.total_bytes == sum(p.stat().st_size for p in source_files)
    for spec in files:
        assert sha256_file(dest / spec.path) == spec.sha256


@pytest.mark.parametrize("bad", ["../escape.csv", "/abs.csv", ""])
def test_paths_outside_destination_are_refused(tmp_path: Path, bad: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(DataError, match="must be relative"):
        fetch_dataset(str(src), tmp_path / "dest", [FileSpec(bad)], progress=False)
    assert not (tmp_path / "dest").exists()
