"""Stage: hyperparameter search with Optuna over a search space declared in config (``sweep``).

Each trial is an ordinary training run (``stages.train``) composed from the base overrides plus
the trial's values, tracked as a child of the sweep's tracked run. Trials report the project's
monitored validation metric after every epoch; the median pruner stops trials that are doing
worse than earlier ones at the same epoch. The study lives in a SQLite file in the sweep
directory, or in the database at ``sweep.storage`` (PostgreSQL), where any number of processes
on any number of machines run trials of one study at once (``tracking.optuna_storage``). Either
way an interrupted sweep resumes where it stopped when run again with the same name.

With several workers: ``n_trials`` caps each process, ``sweep.total_trials`` the whole study;
every worker writes the summary of the whole study when it stops, and only the last one to
finish registers the best trial (``--register-best``).

Sweep directory (``<workdir>/sweeps/<project>/<name>``)::

    optuna.db         the Optuna study (when sweep.storage is null)
    runs/trial-NNN/   every trial's training run (this machine's trials)
    study.json        every trial: state, value, parameters, run directory, worker
    best.yaml         the resolved config of the best trial
    best_overrides.txt  the command-line overrides that reproduce it
"""

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf

from modelyard.core.config import load_config, to_plain
from modelyard.core.errors import ConfigError, ModelyardError
from modelyard.core.run_dir import RunDir
from modelyard.core.runs import timestamp_name
from modelyard.tracking.base import Tracker
from modelyard.tracking.factory import start_tracking
from modelyard.tracking.optuna_storage import (
    claim,
    fail_stale_trials,
    mask,
    open_storage,
    release,
    worker_id,
    worker_seed,
)

if TYPE_CHECKING:
    from modelyard.stages.train import TrainResult

KINDS = ("float", "int", "categorical")
#: User attribute of a trial refused for being past ``sweep.total_trials`` (never trained).
OVER_BUDGET = "over_budget"


@dataclass(frozen=True)
class SweepResult:
    directory: Path
    best_value: float
    best_overrides: list[str]
    best_run: Path
    trials: list[dict[str, Any]]
    registered: str | None = None


def _train_trial(
    cfg: DictConfig, trial: Any, monitor: str, parent_run_id: str | None
) -> tuple["TrainResult", int | None]:
    """Train ``trial``'s run; the result and the epoch it was pruned after (``None``: not).

    torch and Lightning are imported here, for the first trial, not with this module: a bad
    configuration or storage is reported in a second, not after seconds of imports.
    """
    from modelyard.stages import train
    from modelyard.tracking.optuna_pruning import PruningCallback

    pruning = PruningCallback(trial, monitor)
    result = train.run(cfg, callbacks=[pruning], parent_run_id=parent_run_id)
    return result, pruning.pruned_at


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


def check_in_process(cfg: DictConfig, what: str) -> None:
    """Refuse DDP for a stage that trains several runs in this process (``what`` does):
    DDP starts the command again in other processes, which would redo the whole stage."""
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if strategy.startswith("ddp") and int(cfg.trainer.get("devices", 1)) != 1:
        raise ConfigError(f"{what} in this process; use trainer=cpu (or gpu) rather than ddp")


class OverBudgetError(Exception):
    """A trial numbered past ``sweep.total_trials``: another worker took the last slot between
    this worker's budget check and its new trial. It fails at once, untrained, and its worker
    stops."""


@dataclass(frozen=True)
class Budget:
    """Trials this process runs (``n_trials``) and the most the study holds (``total_trials``,
    trial numbers ``0 .. total-1``, every worker and every earlier run of the study counted)."""

    per_process: int
    total: int | None

    def full(self, study: Any) -> bool:
        return self.total is not None and len(study.get_trials(deepcopy=False)) >= self.total

    def stop_when_full(self, study: Any, trial: Any) -> None:
        """Optuna callback after each trial: no new trial once the study holds the total."""
        if self.full(study):
            study.stop()

    def check(self, trial: Any) -> None:
        """Refuse a trial numbered past the total (a race the callback alone cannot close:
        trial numbers come from the database, so this check is exact)."""
        if self.total is not None and trial.number >= self.total:
            trial.set_user_attr(OVER_BUDGET, True)
            trial.study.stop()
            raise OverBudgetError(
                f"trial {trial.number} is past sweep.total_trials={self.total}; "
                "not trained, this worker stops"
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
    check_in_process(cfg, "sweeps run trials")
    space = parse_space(cfg.sweep.get("params"))
    url = _storage_url(cfg)
    if url is not None and name is None:
        raise ConfigError(
            "a sweep on sweep.storage needs --name: every worker of one study passes the same name"
        )
    name = name or f"sweep-{timestamp_name()}"
    directory = Path(cfg.paths.workdir) / "sweeps" / str(cfg.project.name) / name
    directory.mkdir(parents=True, exist_ok=True)
    runs = (directory / "runs").resolve()
    monitor = str(cfg.project.get("monitor", "val_loss"))
    budget = _budget(cfg, n_trials)
    worker = worker_id()
    storage = open_storage(url, directory, float(cfg.sweep.heartbeat_s))
    study = _open_study(cfg, name, storage, worker if url is not None else None)
    where = "sqlite (sweep directory)" if url is None else mask(url)
    if url is not None:
        log(f"study {name} on {where}: worker {worker}, {len(study.trials)} trials so far")

    parent = start_tracking(
        cfg, directory, {"project": str(cfg.project.name), "sweep": name, "worker": worker}
    )
    parent_id = parent.run.run_id if parent.run is not None and parent.backend == "mlflow" else None
    parent.log_params(
        {f"space.{k}": json.dumps(v) for k, v in space.items()}
        | {"trials": budget.per_process, "total_trials": str(budget.total), "storage": where}
    )

    def objective(trial: optuna.Trial) -> float:
        budget.check(trial)
        trial.set_user_attr("worker", worker)
        values = suggest(trial, space)
        trial_overrides = [as_override(k, v) for k, v in values.items()]
        trial_cfg = _public(
            load_config(
                [
                    *overrides,
                    *trial_overrides,
                    f"paths.runs={runs}",
                    f"run_name=trial-{trial.number:03d}",
                ]
            )
        )
        result, pruned_at = _train_trial(trial_cfg, trial, monitor, parent_id)
        trial.set_user_attr("run_dir", str(result.run_dir))
        trial.set_user_attr("overrides", trial_overrides)
        if pruned_at is not None:
            log(f"trial {trial.number}: pruned after epoch {pruned_at} ({values})")
            raise optuna.TrialPruned()
        if result.best_score is None:
            raise ModelyardError(f"trial {trial.number} produced no {monitor}")
        log(f"trial {trial.number}: {monitor} {result.best_score:.5g} ({values})")
        parent.log_metrics({f"trial_{monitor}": result.best_score}, step=trial.number)
        return float(result.best_score)

    timeout = cfg.sweep.get("timeout_s")
    try:
        study.optimize(
            objective,
            n_trials=0 if budget.full(study) else budget.per_process,
            timeout=float(timeout) if timeout else None,
            callbacks=[budget.stop_when_full],
            catch=(OverBudgetError,),
        )
        result = _summarise(study, directory, monitor, overrides)
        registered = (
            _register_once(storage, study, overrides, result, worker, log)
            if register_best
            else None
        )
    except BaseException:
        parent.finish(failed=True)
        raise
    _track_summary(parent, result, directory, monitor)
    parent.finish()
    return replace(result, registered=registered)


def _storage_url(cfg: DictConfig) -> str | None:
    value = cfg.sweep.get("storage")
    return str(value) if value else None


def _public(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the storage URL's password masked: trial configs are saved in run
    directories and bundles and tracked as parameters, where no secret belongs."""
    url = _storage_url(cfg)
    if url is not None:
        cfg.sweep.storage = mask(url)
    return cfg


def _budget(cfg: DictConfig, n_trials: int | None) -> Budget:
    per_process = int(n_trials if n_trials is not None else cfg.sweep.n_trials)
    if per_process < 0:
        raise ConfigError(f"the number of trials must be 0 or more, not {per_process}")
    total = cfg.sweep.get("total_trials")
    if total is not None and int(total) < 1:
        raise ConfigError("sweep.total_trials must be at least 1 (or null: no study-wide cap)")
    return Budget(per_process, None if total is None else int(total))


def _open_study(cfg: DictConfig, name: str, storage: Any, worker: str | None) -> Any:
    """Create the study or join it (``load_if_exists``: whichever worker comes first creates
    it). ``worker`` is set for a shared storage, where each worker seeds its own sampler."""
    import optuna

    seed = int(cfg.sweep.sampler.seed)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(
            seed=seed if worker is None else worker_seed(seed, worker),
            n_startup_trials=int(cfg.sweep.sampler.startup_trials),
        ),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=int(cfg.sweep.pruner.startup_trials),
            n_warmup_steps=int(cfg.sweep.pruner.warmup_epochs),
        ),
    )
    project = str(cfg.project.name)
    owner = study.user_attrs.get("project")
    if owner is None:
        study.set_user_attr("project", project)
    elif owner != project:
        raise ConfigError(
            f"study {name} in sweep.storage is a {owner} sweep, not {project}: "
            "choose another --name"
        )
    return study


def _summarise(study: Any, directory: Path, monitor: str, overrides: Sequence[str]) -> SweepResult:
    """Write study.json, best.yaml and best_overrides.txt for the whole study (every worker's
    trials). Files are replaced atomically: workers may share the sweep directory."""
    import optuna

    ran = [t for t in study.trials if not t.user_attrs.get(OVER_BUDGET)]
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "run_dir": t.user_attrs.get("run_dir"),
            "overrides": t.user_attrs.get("overrides", []),
            "worker": t.user_attrs.get("worker"),
        }
        for t in ran
    ]
    _write(directory / "study.json", json.dumps({"monitor": monitor, "trials": rows}, indent=2))
    complete = [t for t in ran if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ModelyardError(f"no trial of {directory.name} completed; nothing to choose from")
    best = study.best_trial
    best_run = Path(best.user_attrs["run_dir"])
    best_overrides = list(best.user_attrs.get("overrides", []))
    saved = RunDir(best_run).config
    if saved.is_file():
        _write(directory / "best.yaml", saved.read_text())
    else:  # the best trial ran on another machine: its overrides reproduce its config
        replayed = _public(load_config([*overrides, *best_overrides]))
        _write(directory / "best.yaml", yaml.safe_dump(to_plain(replayed), sort_keys=False))
    _write(directory / "best_overrides.txt", " ".join(best_overrides) + "\n")
    return SweepResult(directory, float(best.value), best_overrides, best_run, rows)


def _write(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(path)


def _register_once(
    storage: Any,
    study: Any,
    overrides: Sequence[str],
    result: SweepResult,
    worker: str,
    log: Callable[[str], None],
) -> str | None:
    """Register the study's best trial exactly once, however many workers share the study.

    The last worker to finish registers (while any trial still runs, the best may change), and
    :func:`claim` settles a tie between workers that finish together. A claim is per best trial,
    so running again with ``--register-best`` does not register the same trial twice. Returns
    the registered ``name/version`` when this worker registered it, else None (logged why).
    """
    import optuna

    state = optuna.trial.TrialState
    fail_stale_trials(study)  # a dead worker's trial must not block the registration
    busy = [t.number for t in study.get_trials(deepcopy=False, states=(state.RUNNING,))]
    best = study.best_trial
    if busy:
        log(
            f"not registering: trials {busy} still run on other workers; "
            "the last worker to finish registers the best trial"
        )
        return None
    if not RunDir(result.best_run).config.is_file():
        log(
            f"not registering: the best trial {best.number} ran on {best.user_attrs.get('worker')}"
            f" and its run directory {result.best_run} is not on this machine (share"
            " paths.workdir between workers, or run --trials 0 --register-best where it is)"
        )
        return None
    key = f"{study.study_name}:registration:trial-{best.number}"
    outcome = claim(storage, key, worker)
    if not outcome.won:
        record = outcome.record.user_attrs
        done = f"registered as {record['registered']}" if "registered" in record else "claimed"
        log(f"best trial {best.number} already {done} by worker {record.get('worker', '?')}")
        return None
    try:
        registered = _register(overrides, result, log)
    except BaseException:
        release(storage, key)
        raise
    outcome.record.set_user_attr("registered", registered)
    return registered


def _register(overrides: Sequence[str], result: SweepResult, log: Callable[[str], None]) -> str:
    from modelyard.registry.store import open_registry
    from modelyard.stages import evaluate, export

    cfg = _public(load_config([*overrides, *result.best_overrides]))
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
