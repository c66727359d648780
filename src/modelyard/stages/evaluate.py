"""Stage: score a trained run or a bundle on the configured test data or any data source."""

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.core.families import load_task
from modelyard.core.run_dir import METRICS_FILE
from modelyard.projects.model_source import load_model_source
from modelyard.tracking.base import numeric_metrics
from modelyard.tracking.factory import resume_tracking


def run(
    cfg: DictConfig,
    model: Path | None = None,
    source: Path | None = None,
    output: Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """Evaluate and write the metrics JSON (default: inside the run or bundle); return both."""
    task = load_task(cfg)
    loaded = load_model_source(cfg, task, model)
    output = Path(output) if output is not None else loaded.path / METRICS_FILE
    output.parent.mkdir(parents=True, exist_ok=True)
    metrics = task.evaluate(loaded.model, loaded.preprocessing, source, output.parent)
    metrics["evaluated"] = {"path": str(loaded.path), "kind": loaded.kind}
    output.write_text(json.dumps(metrics, indent=2) + "\n")
    if loaded.kind == "run":
        _track(loaded.path, output, source)
    return metrics, output


def _track(run_dir: Path, output: Path, source: Path | None) -> None:
    """Add the scores and plots to the run's tracked run (if it is tracked)."""
    tracker = resume_tracking(run_dir)
    if tracker.run is None:
        return
    prefix = "eval" if source is None else f"eval_{Path(source).name}"
    metrics = json.loads(output.read_text())
    tracker.log_metrics(numeric_metrics(metrics, f"{prefix}/"))
    tracker.log_artifact(output.parent, prefix)
    tracker.finish()
