"""Weights & Biases tracking; offline (files under the working directory) without an API key."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelyard.tracking.base import TrackedRun, Tracker, TrackingError, safe_key


def resolve_mode(mode: str) -> str:
    """``auto`` -> online when an API key is configured, offline otherwise."""
    if mode in {"online", "offline", "disabled"}:
        return mode
    if mode != "auto":
        raise TrackingError(f"tracking.mode must be online, offline or auto, not {mode!r}")
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
    return "online" if has_key else "offline"


class WandbTracker(Tracker):
    backend = "wandb"

    def __init__(self, handle: Any, run: TrackedRun) -> None:
        self._handle = handle
        self._run = run

    @property
    def run(self) -> TrackedRun:
        return self._run

    @classmethod
    def open(
        cls,
        project: str,
        entity: str | None,
        mode: str,
        directory: Path,
        run_name: str | None = None,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> "WandbTracker":
        try:
            import wandb
        except ImportError as exc:
            raise TrackingError(
                "tracking=wandb needs wandb: pip install 'modelyard[wandb]'"
            ) from exc
        directory.mkdir(parents=True, exist_ok=True)
        resolved = resolve_mode(mode)
        try:
            handle = wandb.init(
                project=project,
                entity=entity,
                mode=resolved,  # type: ignore[arg-type]
                dir=str(directory),
                name=run_name,
                id=run_id,
                resume="allow" if run_id else None,
                config=dict(config or {}),
                reinit="create_new",
            )
        except Exception as exc:
            raise TrackingError(f"W&B ({resolved}) could not start a run: {exc}") from exc
        location = str(Path(handle.dir).parent) if resolved == "offline" else handle.url or ""
        return cls(handle, TrackedRun("wandb", handle.id, location, project))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._handle.config.update({safe_key(k): v for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:  # final numbers: the run summary, not a point of a curve
            self._handle.summary.update(dict(metrics))
        else:
            self._handle.log(dict(metrics), step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        import wandb

        artifact = wandb.Artifact(safe_key(folder or path.stem).replace("/", "-"), type="modelyard")
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self._handle.log_artifact(artifact)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._handle.config.update({f"tag.{k}": v for k, v in tags.items()})

    def finish(self, failed: bool = False) -> None:
        self._handle.finish(exit_code=1 if failed else 0)
