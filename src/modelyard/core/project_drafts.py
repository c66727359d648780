"""What ``modelyard init`` drafts for a family: a project file's text and the facts found, and
the small text helpers the families' drafts share (``stages/init_project.py`` writes them)."""

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class ProjectDraft:
    """A project file's text and what was read from the data to write it (for the CLI)."""

    text: str
    facts: list[str] = field(default_factory=list)


def portable(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else absolute."""
    resolved = path.expanduser().resolve()
    try:
        return resolved.relative_to(Path.cwd()).as_posix() or "."
    except ValueError:
        return resolved.as_posix()


def yaml_scalar(text: str) -> str:
    """A YAML scalar for ``text`` (quoted when YAML would read it otherwise)."""
    dumped = yaml.safe_dump(text, default_flow_style=True).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def plain_number(value: float) -> float | int:
    """An int when whole, else rounded to 6 decimals: how a drafted bound reads best."""
    return int(value) if float(value).is_integer() else round(float(value), 6)
