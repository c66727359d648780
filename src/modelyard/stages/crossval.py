"""Stage: k-fold cross-validation (``modelyard crossval``), for image projects.

With few images one test split says little: 15 test images give an accuracy whose 95 % interval
spans some 40 points. Cross-validation scores every image of the prepared training and
validation splits once, each by a model trained without it, and reports the folds' scores, their
mean and standard deviation, and the pooled out-of-fold accuracy with its Wilson interval (two
classes: the pooled ROC-AUC too), beside the majority baseline. The test split is not touched.

Folds (``cv.folds``, default 5) are stratified by class (:func:`stratified_folds`, seeded by
``cv.seed``). Each fold is an ordinary training run (``stages.train``, the configured model,
schedule and experiment) on a prepared directory of its own, scored by the ordinary evaluation
(``stages.evaluate``); see :mod:`modelyard.projects.vision.crossval` for what each fold holds.
Runs are tracked as children of one cross-validation run, as a sweep's trials are.

Directory (``<workdir>/crossval/<project>/<name>``)::

    folds/fold-N/     the fold's prepared images (train, val = inner split, test = held out)
    runs/fold-N/      the fold's training run, with its evaluation (metrics.json, plots)
    crossval.json     per-fold scores, mean and standard deviation, pooled scores
"""

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from modelyard.core.errors import ConfigError
from modelyard.core.families import load_task
from modelyard.core.run_dir import RunDir
from modelyard.core.runs import timestamp_name
from modelyard.projects.vision.crossval import (
    FoldOutcome,
    Pool,
    load_pool,
    per_class,
    summarise,
    write_fold,
)
from modelyard.projects.vision.image_cache import load_part
from modelyard.projects.vision.image_folders import stratified_folds
from modelyard.projects.vision.task import VisionTask
from modelyard.stages import evaluate, train
from modelyard.stages.sweep import check_in_process
from modelyard.tracking.base import Tracker, numeric_metrics
from modelyard.tracking.factory import start_tracking

REPORT_FILE = "crossval.json"
#: Why each family other than vision is refused (one line each).
UNSUPPORTED = {
    "nilm": "NILM projects are split by house (a house is the unit, its windows are not "
    "independent): score unseen houses with `modelyard evaluate --source <house>` instead",
    "tabular": "table projects are regressions, split at random or by time and with outliers "
    "removed from the training rows only: cross-validation is not offered for them",
}


@dataclass(frozen=True)
class CrossValResult:
    directory: Path
    report_path: Path
    report: dict[str, Any]


@dataclass(frozen=True)
class Settings:
    folds: int
    seed: int
    val_fraction: float


def settings(cfg: DictConfig) -> Settings:
    """``cv.folds`` and ``cv.seed``, checked; the inner validation share of the training folds
    is the project's ``project.data.split.val_fraction``."""
    family = str(cfg.project.task)
    if family != "vision":
        reason = UNSUPPORTED.get(family, f"the {family!r} family has no cross-validation")
        raise ConfigError(f"crossval is for image projects: {reason}")
    check_in_process(cfg, "cross-validation trains its folds")
    cv = cfg.get("cv") or {}
    values = {}
    for key, default in (("folds", 5), ("seed", 0)):
        value = cv.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"cv.{key} must be a whole number, got {value!r}")
        values[key] = value
    return Settings(values["folds"], values["seed"], float(cfg.project.data.split.val_fraction))


def run(
    cfg: DictConfig,
    name: str | None = None,
    log: Callable[[str], None] = print,
) -> CrossValResult:
    """Cross-validate the configured image project; write and return the report."""
    chosen = settings(cfg)
    task = load_task(cfg)
    assert isinstance(task, VisionTask)
    pool = load_pool(Path(cfg.paths.prepared))
    folds = stratified_folds(pool.labels, chosen.folds, chosen.seed)  # bad cv.* fails here
    directory = Path(cfg.paths.workdir) / "crossval" / str(cfg.project.name)
    directory = directory / (name or timestamp_name())
    if (directory / REPORT_FILE).exists():
        raise ConfigError(f"{directory} already holds a cross-validation: choose another --name")
    directory.mkdir(parents=True, exist_ok=True)
    parent = start_tracking(
        cfg, directory, {"project": str(cfg.project.name), "crossval": directory.name}
    )
    parent_id = parent.run.run_id if parent.run is not None and parent.backend == "mlflow" else None
    parent.log_params(
        {"cv.folds": chosen.folds, "cv.seed": chosen.seed, "pooled_images": pool.labels.size}
    )
    try:
        outcomes = []
        for number, held_out in enumerate(folds, start=1):
            log(f"fold {number}/{chosen.folds}: {held_out.size} held-out images")
            outcomes.append(_fold(cfg, task, pool, held_out, directory, number, chosen, parent_id))
        report = _report(cfg, chosen, pool, outcomes, task)
        report_path = directory / REPORT_FILE
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    except BaseException:
        parent.finish(failed=True)
        raise
    _track(parent, report, report_path)
    parent.finish()
    return CrossValResult(directory, report_path, report)


def _fold(
    cfg: DictConfig,
    task: VisionTask,
    pool: Pool,
    held_out: np.ndarray,
    directory: Path,
    number: int,
    chosen: Settings,
    parent_id: str | None,
) -> FoldOutcome:
    """Prepare, train and evaluate one fold; the held-out images' logits for pooling."""
    prepared = (directory / "folds" / f"fold-{number}").resolve()
    write_fold(pool, held_out, prepared, chosen.val_fraction, chosen.seed)
    # the configuration is resolved: its copy differs in these three values only
    fold_cfg = copy.deepcopy(cfg)
    fold_cfg.paths.prepared = str(prepared)
    fold_cfg.paths.runs = str((directory / "runs").resolve())
    fold_cfg.run_name = f"fold-{number}"
    trained = train.run(fold_cfg, parent_run_id=parent_id)
    metrics, _ = evaluate.run(fold_cfg, model=trained.run_dir)
    pixels, labels = load_part(prepared, "test")
    logits = task.run_logits(RunDir(trained.run_dir), pixels)
    return FoldOutcome(metrics=metrics, labels=labels, logits=logits, run_dir=trained.run_dir)


def _report(
    cfg: DictConfig,
    chosen: Settings,
    pool: Pool,
    outcomes: list[FoldOutcome],
    task: VisionTask,
) -> dict[str, Any]:
    return {
        "project": str(cfg.project.name),
        "classes": pool.classes,
        "cv": {"folds": chosen.folds, "seed": chosen.seed},
        "pool": {
            "parts": "the prepared train and validation splits (the test split is not used)",
            "images": int(pool.labels.size),
            "per_class": per_class(pool.labels, pool.classes),
        },
        "validation": (
            "each fold trains on the other folds less a stratified inner validation split "
            f"({chosen.val_fraction:g} of them, project.data.split.val_fraction), which selects "
            "the best checkpoint and a two-class decision threshold"
        ),
        "std": "sample standard deviation over the folds (n - 1)",
        **summarise(outcomes, pool.classes, task.decision_rule.positive),
    }


def _track(parent: Tracker, report: dict[str, Any], report_path: Path) -> None:
    for row in report["folds"]:
        scores = {key: float(row[key]) for key in ("accuracy", "macro_f1", "roc_auc") if key in row}
        parent.log_metrics({f"fold_{key}": value for key, value in scores.items()}, row["fold"])
    summary = {"across_folds": report["across_folds"], "pooled": report["pooled"]}
    parent.log_metrics(numeric_metrics(summary))
    parent.log_artifact(report_path)


def table(report: dict[str, Any]) -> list[str]:
    """The report as a few lines of text: one per fold, mean +- std, pooled, baseline."""
    across = report["across_folds"]
    columns = [key for key in ("accuracy", "macro_f1", "roc_auc") if key in across]
    lines = [f"{'fold':>5} {'images':>6}" + "".join(f" {key:>9}" for key in columns)]
    for row in report["folds"]:
        scores = "".join(f" {row[key]:>9.4f}" for key in columns)
        lines.append(f"{row['fold']:>5} {row['images']:>6}{scores}")
    lines.append(
        "mean +- std: "
        + ", ".join(
            f"{key} {across[key]['mean']:.4f} +- {across[key]['std']:.4f}" for key in columns
        )
    )
    pooled = report["pooled"]
    interval = pooled["accuracy_interval"]
    lines.append(
        f"pooled out-of-fold: accuracy {pooled['accuracy']:.4f} ({pooled['correct']}/"
        f"{pooled['images']}; 95% Wilson {interval['low']:.4f}-{interval['high']:.4f})"
        + (f", roc_auc {pooled['binary']['roc_auc']:.4f}" if "binary" in pooled else "")
    )
    at = pooled.get("binary", {}).get("at_threshold")
    if at is not None:
        interval = at["accuracy_interval"]
        lines.append(
            f"pooled at each fold's threshold: accuracy {at['accuracy']:.4f} ({at['correct']}/"
            f"{at['images']}; 95% Wilson {interval['low']:.4f}-{interval['high']:.4f})"
        )
    baseline = pooled["baseline"]
    lines.append(f"majority baseline: accuracy {baseline['accuracy']:.4f} ({baseline['class']})")
    return lines
