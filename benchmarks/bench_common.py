"""What every benchmark script shares: arguments, a prepared configuration, the results folder."""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.core.config import load_config
from modelyard.stages import evaluate, fetch, prepare, train
from modelyard.stages.train import TrainResult

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str, name: str) -> argparse.ArgumentParser:
    """Arguments common to the benchmarks; scripts add their own."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--source", required=True, help="NILM data directory or URL")
    result.add_argument("--workdir", default=".modelyard-bench", help="modelyard working dir")
    result.add_argument("--name", default=name, help="results file name (without .json)")
    result.add_argument("overrides", nargs="*", help="Hydra overrides")
    return result


def prepared_config(args: argparse.Namespace) -> tuple[DictConfig, list[str]]:
    """Compose the config (``experiment=baseline`` unless overridden), fetch and prepare data."""
    overrides = list(args.overrides)
    if not any(o.startswith("experiment=") for o in overrides):
        overrides.insert(0, "experiment=baseline")
    cfg = load_config([*overrides, f"paths.workdir={args.workdir}"])
    fetch.run(cfg, source=args.source, progress=False)
    prepare.run(cfg)
    return cfg, overrides


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def train_and_evaluate(cfg: DictConfig) -> tuple[TrainResult, dict[str, Any], Path, float]:
    """Train, then evaluate the run on the configured test data; also the training wall time."""
    started = time.perf_counter()
    trained = train.run(cfg)
    seconds = time.perf_counter() - started
    metrics, path = evaluate.run(cfg, model=trained.run_dir)
    return trained, metrics, path, seconds


def nilm_run_and_bundle(source: str, workdir: Path) -> tuple[Path, Path]:
    """Train the full seq2point for a few batches and export it: (run dir, bundle dir)."""
    return quick_run_and_bundle("nilm", source, workdir)


def eurosat_run_and_bundle(source: str, workdir: Path) -> tuple[Path, Path]:
    """Train the full EuroSAT CNN for a few batches and export it: (run dir, bundle dir)."""
    return quick_run_and_bundle("eurosat", source, workdir)


def quick_run_and_bundle(project: str, source: str, workdir: Path) -> tuple[Path, Path]:
    """A project's full model trained on the quick schedule (speed does not depend on the
    weights) and exported: (run dir, bundle dir)."""
    env = {**os.environ, "MODELYARD_HOME": str(workdir)}
    cli = [sys.executable, "-m", "modelyard"]
    chosen = [f"project={project}", "experiment=quick", f"model={project}", "tracking=none"]
    steps = [
        ["data", "fetch", f"project={project}", "--source", source],
        ["data", "prepare", f"project={project}"],
        ["train", *chosen, "trainer.max_epochs=1"],
        ["export", *chosen],
    ]
    for step in steps:
        subprocess.run([*cli, *step], env=env, check=True, capture_output=True)
    runs = workdir / "runs" / project
    bundles = workdir / "bundles" / project
    latest = (runs / "LATEST").read_text().strip(), (bundles / "LATEST").read_text().strip()
    return runs / latest[0], bundles / latest[1]
