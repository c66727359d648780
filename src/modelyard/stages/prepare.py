"""Stage: turn raw data into the prepared form training reads."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.projects.registry import load_task


def run(cfg: DictConfig, source: Path | None = None) -> dict[str, Any]:
    """Prepare raw data from ``source`` (default: the fetched raw data) into ``paths.prepared``."""
    output = Path(cfg.paths.prepared)
    output.mkdir(parents=True, exist_ok=True)
    return load_task(cfg).prepare(Path(source or cfg.paths.raw), output)
