"""Stage: turn raw data into the prepared form training reads.

Every reader accounts for its rows (read = kept + filtered + refused, see
:mod:`modelyard.core.row_accounting`); the summary's ``reading`` block holds one report per source
file, and rows refused above ``project.data.max_refused_fraction`` stop the stage when
``project.data.on_refused`` is ``fail`` (the default).
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.core.families import load_task
from modelyard.core.row_accounting import RefusalPolicy


def run(cfg: DictConfig, source: Path | None = None) -> dict[str, Any]:
    """Prepare raw data from ``source`` (default: the fetched raw data) into ``paths.prepared``."""
    RefusalPolicy.from_config(cfg.project.data)  # a bad option fails before any work is done
    output = Path(cfg.paths.prepared)
    output.mkdir(parents=True, exist_ok=True)
    return load_task(cfg).prepare(Path(source or cfg.paths.raw), output)
