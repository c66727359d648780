"""Which files a bundle may use: plain names of regular files inside its own directory.

A manifest is data from outside the process; a file name in it must not make the loader read,
hash or serve anything elsewhere (``/etc/shadow``, ``../other/model.onnx``, a symlink planted
in the bundle). The bundle directory itself may be reached through a symlink (an operator's
``current`` link); the files in it may not be symlinks.
"""

from pathlib import Path

from modelyard.core.errors import BundleError


def check_file_name(name: str) -> str:
    """A file name inside the bundle directory: no separators, no parent references."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a plain file name inside the bundle")
    return name


def bundle_file(root: Path, name: str, what: str) -> Path:
    """``root / name`` after checking that it is a regular file of the bundle, not a link.

    ``root`` must be resolved already. Errors name the file inside the bundle only: nothing
    outside it is opened, hashed or described.
    """
    try:
        check_file_name(name)
    except ValueError as exc:
        raise BundleError(f"{root}: {what} {exc}") from None
    file = root / name
    if file.is_symlink():
        raise BundleError(f"{root}: {what} {name} is a symbolic link; a bundle holds real files")
    if not file.is_file():
        raise BundleError(f"{root}: {what} {name} is missing")
    if file.resolve().parent != root:
        raise BundleError(f"{root}: {what} {name} resolves outside the bundle directory")
    return file
