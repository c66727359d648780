"""Content hashes for files and datasets."""

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in chunks so that large files stay cheap."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_files(paths: Iterable[Path], root: Path) -> str:
    """Fingerprint a set of files by their paths relative to ``root`` and their contents.

    The result changes when a file is added, removed, renamed or edited, and does not depend on
    where ``root`` lives on disk or in which order the files were listed.
    """
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(sha256_file(path).encode())
        digest.update(b"\n")
    return digest.hexdigest()
