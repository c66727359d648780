"""Stage: bring a project's raw data from its configured source into the working directory."""

from pathlib import Path

from omegaconf import DictConfig

from modelyard.core.fetch import FetchReport, FileSpec, fetch_dataset


def run(
    cfg: DictConfig, source: str | None = None, force: bool = False, progress: bool = True
) -> FetchReport:
    """Fetch ``cfg.project.data.files`` (all files when none are listed) from ``source``."""
    data = cfg.project.data
    listed = data.get("files") or []
    files = [
        FileSpec(path=str(f.path), remote=f.get("remote"), sha256=f.get("sha256")) for f in listed
    ]
    return fetch_dataset(
        str(source or data.source),
        Path(cfg.paths.raw),
        files or None,
        force=force,
        progress=progress,
    )
