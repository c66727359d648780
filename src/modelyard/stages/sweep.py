"""Stage: hyperparameter search with Optuna over a search space declared in config (``sweep``).

Each trial is an ordinary training run (``stages.train``) composed from the base overrides plus
the trial's values, tracked as a child of the sweep's tracked run. Trials report the project's
monitored validation metric after every epoch; the median pruner stops trials that are doing
worse than earlier ones at the same epoch. The study lives in a SQLite file, so an interrupted
sweep resumes where it stopped when run again with the same name.

Sweep directory (``<workdir>/sweeps/<project>/<name>``)::

    optuna.db         the Optuna study
    runs/trial-NNN/   every trial's training run
    study.json        every trial: state, value, parameters, run directory
    best.yaml         the resolved config of the best trial
    best_overrides.txt  the command-line overrides that reproduce it
"""

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError, ModelyardError
from modelyard.core.run_dir import RunDir
from modelyard.core.runs import timestamp_name
from modelyard.stages import train
from modelyard.tracking.base import Tracker
from modelyard.tracking.factory import start_tracking

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class SweepResult:
    directory: Path
    best_value: float
    best_overrides: list[str]
    best_run: Path
    trials: list[dict[str, Any]]
    registered: str | None = None


class PruningCallback(L.Callback):
    """Report the monitored metric to the trial after each validation; stop if it is pruned.

    The trial is stopped through ``trainer.should_stop`` (not an exception), so the run ends
    cleanly with its best checkpoint, and the sweep marks the trial pruned afterwards.
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch = int(trainer.current_epoch)
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


def parse_space(space: Any) -> dict[str, dict[str, Any]]:
    """Validate ``sweep.params``: every entry names a known type with its bounds or choices."""
    if not space:
        raise ConfigError("sweep.params is empty: declare at least one parameter to search")
    if OmegaConf.is_config(space):
        space = OmegaConf.to_container(space, resolve=True)
    parsed: dict[str, dict[str, Any]] = {}
    for key, entry in dict(space).items():
        spec = dict(entry)
        kind = spec.get("type")
        if kind not in KINDS:
            raise ConfigError(f"sweep.params.{key}.type must be one of {', '.join(KINDS)}")
        if kind == "categorical":
            if not spec.get("choices"):
                raise ConfigError(f"sweep.params.{key} needs a non-empty 'choices' list")
        else:
            if "low" not in spec or "high" not in spec:
                raise ConfigError(f"sweep.params.{key} needs 'low' and 'high'")
            if not float(spec["low"]) < float(spec["high"]):
                raise ConfigError(f"sweep.params.{key}: low must be below high")
            if spec.get("log") and float(spec["low"]) <= 0:
                raise ConfigError(f"sweep.params.{key}: a log scale needs low > 0")
        parsed[str(key)] = spec
    return parsed


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            values[key] = trial.suggest_float(
                key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(
                key,
                int(spec["low"]),
                int(spec["high"]),
                step=int(spec.get("step", 1)),
                log=bool(spec.get("log", False)),
            )
        else:
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return values


def as_override(key: str, value: Any) -> str:
    """``key=value`` in Hydra's override grammar (lists and strings quoted as JSON)."""
    return f"{key}={json.dumps(value)}"


def _check_supported(cfg: DictConfig) -> None:
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if strategy.startswith("ddp") and int(cfg.trainer.get("devices", 1)) != 1:
        raise ConfigError(
            "sweeps run trials in this process; use trainer=cpu (or gpu) rather than ddp"
        )


def run(
    overrides: Sequence[str] = (),
    name: str | None = None,
    n_trials: int | None = None,
    register_best: bool = False,
    log: Callable[[str], None] = print,
) -> SweepResult:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(list(overrides))
    _check_supported(cfg)
    space = parse_space(cfg.sweep.get("params"))
    name = name or f"sweep-{timestamp_name()}"
    directory = Path(cfg.paths.workdir) / "sweeps" / str(cfg.project.name) / name
    directory.mkdir(parents=True, exist_ok=True)
    runs = (directory / "runs").resolve()
    monitor = str(cfg.project.get("monitor", "val_loss"))
    trials = int(n_trials if n_trials is not None else cfg.sweep.n_trials)

    parent = start_tracking(cfg, directory, {"project": str(cfg.project.name), "sweep": name})
    parent_id = parent.run.run_id if parent.run is not None and parent.backend == "mlflow" else None
    parent.log_params({f"space.{k}": json.dumps(v) for k, v in space.items()} | {"trials": trials})

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        trial_overrides = [as_override(k, v) for k, v in values.items()]
        trial_cfg = load_config(
            [
                *overrides,
                *trial_overrides,
                f"paths.runs={runs}",
                f"run_name=trial-{trial.number:03d}",
            ]
        )
        pruning = PruningCallback(trial, monitor)
        result = train.run(trial_cfg, callbacks=[pruning], parent_run_id=parent_id)
        trial.set_user_attr("run_dir", str(result.run_dir))
        trial.set_user_attr("overrides", trial_overrides)
        if pruning.pruned_at is not None:
            log(f"trial {trial.number}: pruned after epoch {pruning.pruned_at} ({values})")
            raise optuna.TrialPruned()
        if result.best_score is None:
            raise ModelyardError(f"trial {trial.number} produced no {monitor}")
        log(f"trial {trial.number}: {monitor} {result.best_score:.5g} ({values})")
        parent.log_metrics({f"trial_{monitor}": result.best_score}, step=trial.number)
        return float(result.best_score)

    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{directory.resolve()}/optuna.db",
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(
            seed=int(cfg.sweep.sampler.seed), n_startup_trials=int(cfg.sweep.sampler.startup_trials)
        ),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=int(cfg.sweep.pruner.startup_trials),
            n_warmup_steps=int(cfg.sweep.pruner.warmup_epochs),
        ),
    )
    timeout = cfg.sweep.get("timeout_s")
    try:
        study.optimize(objective, n_trials=trials, timeout=float(timeout) if timeout else None)
        result = _summarise(study, directory, monitor)
        registered = _register(overrides, result, log) if register_best else None
    except BaseException:
        parent.finish(failed=True)
        raise
    _track_summary(parent, result, directory, monitor)
    parent.finish()
    return replace(result, registered=registered)


def _summarise(study: Any, directory: Path, monitor: str) -> SweepResult:
    import optuna

    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "run_dir": t.user_attrs.get("run_dir"),
            "overrides": t.user_attrs.get("overrides", []),
        }
        for t in study.trials
    ]
    (directory / "study.json").write_text(
        json.dumps({"monitor": monitor, "trials": rows}, indent=2)
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ModelyardError(f"no trial of {directory.name} completed; nothing to choose from")
    best = study.best_trial
    best_run = Path(best.user_attrs["run_dir"])
    shutil.copyfile(RunDir(best_run).config, directory / "best.yaml")
    overrides = list(best.user_attrs.get("overrides", []))
    (directory / "best_overrides.txt").write_text(" ".join(overrides) + "\n")
    return SweepResult(directory, float(best.value), overrides, best_run, rows)


def _register(overrides: Sequence[str], result: SweepResult, log: Callable[[str], None]) -> str:
    from modelyard.registry.store import open_registry
    from modelyard.stages import evaluate, export

    cfg = load_config([*overrides, *result.best_overrides])
    evaluate.run(cfg, model=result.best_run)
    bundle = export.run(cfg, run_dir=result.best_run)
    registered = open_registry(cfg).register(bundle.path)
    log(f"best trial registered as {registered.name} version {registered.version}")
    return f"{registered.name}/{registered.version}"


def _track_summary(parent: Tracker, result: SweepResult, directory: Path, monitor: str) -> None:
    parent.log_metrics({f"best_{monitor}": result.best_value})
    parent.set_tags(
        {"best_run": str(result.best_run), "best_overrides": " ".join(result.best_overrides)}
    )
    for name in ("study.json", "best.yaml", "best_overrides.txt"):
        parent.log_artifact(directory / name)
