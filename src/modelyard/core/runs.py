"""Where runs and bundles live, and which one is the latest.

A ``LATEST`` text file beside the runs (or bundles) names the newest one, so that
``modelyard evaluate`` or ``modelyard export`` without arguments act on what was just trained.
"""

import os
from datetime import UTC, datetime
from pathlib import Path

from modelyard.core.errors import ModelyardError

LATEST = "LATEST"
#: Environment variable that moves the working directory (config: ``paths.workdir``).
HOME_ENV = "MODELYARD_HOME"


def default_workdir() -> Path:
    """The working directory when no configuration is composed (as ``paths.workdir``)."""
    return Path(os.environ.get(HOME_ENV, ".modelyard"))


def timestamp_name() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


def mark_latest(directory: Path) -> None:
    """Record ``directory`` as the newest entry of its parent."""
    (directory.parent / LATEST).write_text(directory.name + "\n")


def resolve_latest(parent: Path, what: str) -> Path:
    """The directory named by ``parent/LATEST``, with a clear error when there is none yet."""
    pointer = parent / LATEST
    if not pointer.is_file():
        raise ModelyardError(f"no {what} found under {parent}; create one first or pass a path")
    target = parent / pointer.read_text().strip()
    if not target.is_dir():
        raise ModelyardError(f"{pointer} names {target}, which no longer exists")
    return target
