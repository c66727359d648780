"""Stage: score a trained run or a bundle on the configured test data or any data source."""

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.projects.registry import load_task
from modelyard.stages.model_source import load_model_source

METRICS_FILE = Path("evaluation") / "metrics.json"


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
    metrics = task.evaluate(
        loaded.predictor, loaded.preprocessing, source, output.parent, embedder=loaded.embedder
    )
    metrics["evaluated"] = {"path": str(loaded.path), "kind": loaded.kind}
    output.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics, output
