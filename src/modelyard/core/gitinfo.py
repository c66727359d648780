"""Which commit produced an artifact, and whether the working tree had local changes."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool | None


def git_state(cwd: Path | None = None) -> GitState:
    """Return the HEAD commit and dirty flag, or ``None`` values outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return GitState(commit=None, dirty=None)
    return GitState(commit=commit, dirty=bool(status.strip()))
