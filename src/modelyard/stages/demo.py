"""The main job, end to end: fetch -> prepare -> train -> evaluate -> export -> serve -> predict."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from omegaconf import DictConfig

from modelyard.core.errors import ModelyardError
from modelyard.core.families import load_task
from modelyard.serving.adapter import bundle_example
from modelyard.serving.server_process import running_server
from modelyard.stages import evaluate, export, fetch, prepare, train


def run(
    cfg: DictConfig, source: str | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run every stage in-process, then query the real server once; return a summary."""
    started = time.perf_counter()
    log("[1/6] fetch")
    fetched = fetch.run(cfg, source=source)
    log("[2/6] prepare")
    prepare.run(cfg)
    log("[3/6] train")
    trained = train.run(cfg)
    log("[4/6] evaluate")
    metrics, metrics_path = evaluate.run(cfg, model=trained.run_dir)
    log("[5/6] export")
    bundle = export.run(cfg, run_dir=trained.run_dir)
    log("[6/6] serve + one HTTP prediction")
    task = load_task(cfg)
    request = bundle_example(bundle).httpx_arguments()  # what the server warms up with, too
    with running_server(bundle.path) as url:
        response = httpx.post(f"{url}/predict", timeout=60.0, **request)
        if response.status_code != 200:
            raise ModelyardError(
                f"demo prediction failed: HTTP {response.status_code} {response.text[:500]}"
            )
        answer = response.json()
    return {
        "raw_data": str(fetched.destination),
        "prepared_data": str(Path(cfg.paths.prepared)),
        "run": str(trained.run_dir),
        "metrics": str(metrics_path),
        "headline": task.headline(metrics),
        "bundle": str(bundle.path),
        "server": url,
        "prediction": {k: v for k, v in answer.items() if not isinstance(v, dict | list)},
        "seconds": round(time.perf_counter() - started, 1),
    }
