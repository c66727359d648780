"""Sweeps whose Optuna study lives at a URL: two real ``modelyard sweep`` processes share one
study on the real PostgreSQL server, a study-wide budget holds exactly, only one worker
registers the best trial, passwords never leave the URL, and the default SQLite study is where
it always was. Trials train AVM's quick MLP on a small synthetic table (seconds each)."""

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
import yaml

from modelyard.core.config import load_config
from modelyard.registry.store import open_registry
from modelyard.stages import fetch, prepare, sweep
from modelyard.tracking.mlflow_backend import client_for
from modelyard.tracking.optuna_storage import claim, mask, open_storage
from postgres_server import PostgresServer
from tabular_fixtures import synthetic_sales

PASSWORD = "s3cret-Pw"  # the test server trusts 127.0.0.1, so any password connects
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def avm_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides for a sweep of AVM's quick MLP over ``model.lr`` on a prepared synthetic table."""
    source = tmp_path_factory.mktemp("source")
    (source / "boliga_sales_2021.csv").write_text(synthetic_sales(400), encoding="utf-8")
    data = tmp_path_factory.mktemp("avm_data")
    overrides = [
        "project=avm",
        "experiment=quick",
        f"project.data.source={source}",
        "project.data.files=[]",
        f"paths.raw={data / 'raw'}",
        f"paths.prepared={data / 'prepared'}",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "~sweep.params",
        "+sweep.params={model.lr: {type: float, low: 0.0005, high: 0.01, log: true}}",
    ]
    cfg = load_config([*overrides, f"paths.workdir={data}", "tracking=none"])
    fetch.run(cfg, progress=False)
    prepare.run(cfg)
    return overrides


def _environment(workdir: Path, storage: str | None) -> dict[str, str]:
    env = {"MODELYARD_HOME": str(workdir), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if storage is not None:
        env["MODELYARD_SWEEP_STORAGE"] = storage
    return env


def _start(args: list[str], workdir: Path, storage: str | None) -> "subprocess.Popen[str]":
    """``python -m modelyard sweep ARGS`` in the background, the storage URL from the
    environment (as the Kubernetes Job passes it from a Secret)."""
    return subprocess.Popen(
        [sys.executable, "-m", "modelyard", "sweep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(workdir, storage),
    )


def _finish(process: "subprocess.Popen[str]") -> tuple[str, str]:
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"sweep worker ran past {TIMEOUT_S} s:\n{out}\n{err}")
    assert process.returncode == 0, (out, err)
    return out, err


def _with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@")


def _texts_under(root: Path) -> Iterator[tuple[Path, str]]:
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".json", ".txt", ".csv", ".log"}:
            yield path, path.read_text(errors="replace")


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study_within_a_total_budget(
    avm_data: list[str], postgres: PostgresServer, tmp_path: Path
) -> None:
    storage = _with_password(postgres.url)
    args = [
        *avm_data,
        "tracking=mlflow",
        "sweep.total_trials=4",
        "sweep.sampler.startup_trials=2",
        "--name",
        "shared",
        "--trials",
        "4",
        "--register-best",
    ]
    # The tracking store and the project's experiment exist before the workers start, as on an
    # MLflow server in use: MLflow cannot create one embedded store, or one experiment, from
    # two processes at the same instant.
    client = client_for(f"sqlite:///{tmp_path}/mlflow.db")
    client.create_experiment("avm", artifact_location=(tmp_path / "mlartifacts").as_uri())
    # one working directory, as a shared volume gives the workers of the Kubernetes Job
    workers = [_start(args, tmp_path, storage) for _ in range(2)]
    outputs = [_finish(worker) for worker in workers]

    study = optuna.load_study(study_name="shared", storage=postgres.url)
    ran = [t for t in study.trials if not t.user_attrs.get(sweep.OVER_BUDGET)]
    # none lost, none twice: exactly the budget, with distinct numbers 0..3
    assert sorted(t.number for t in ran) == [0, 1, 2, 3]
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert all(t.state in finished for t in ran), [t.state for t in ran]
    # shared: both workers trained trials of the one study
    assert len({t.user_attrs["worker"] for t in ran}) == 2
    for trial in ran:
        assert (Path(trial.user_attrs["run_dir"]) / "config.yaml").is_file()
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.value is not None and trial.value > 0
    # a trial refused for the budget (a race between the workers) never trained
    assert all(not t.params for t in study.trials if t.user_attrs.get(sweep.OVER_BUDGET))

    # the study's summary covers every worker's trials
    directory = tmp_path / "sweeps" / "avm" / "shared"
    summary = json.loads((directory / "study.json").read_text())
    assert sorted(t["number"] for t in summary["trials"]) == [0, 1, 2, 3]
    best = min(t.value for t in ran if t.value is not None)
    assert study.best_value == pytest.approx(best)

    # exactly one worker registered the best trial
    texts = [out + err for out, err in outputs]
    assert sum("registered: avm/1" in text for text in texts) == 1, texts
    registry = open_registry(load_config([*avm_data, f"paths.workdir={tmp_path}"]))
    assert [v.version for v in registry.versions("avm")] == ["1"]

    # MLflow: each worker has its own parent run, its trials are that run's children
    runs = client.search_runs([client.get_experiment_by_name("avm").experiment_id])
    parents = [r for r in runs if r.info.run_name == "shared"]
    assert len(parents) == 2
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        mine = [t for t in ran if t.user_attrs["worker"] == parent.data.tags["worker"]]
        assert sorted(r.info.run_name for r in children) == sorted(
            f"trial-{t.number:03d}" for t in mine
        )
        assert parent.data.params["storage"].startswith("postgresql+psycopg://postgres:***@")

    # the password appears in no output, tracked parameter, saved config or summary
    for text in texts:
        assert "study shared on postgresql+psycopg://postgres:***@127.0.0.1" in text
        assert PASSWORD not in text
    assert not [r for r in runs if PASSWORD in json.dumps(r.data.params)]
    leaks = [path for path, text in _texts_under(tmp_path) if PASSWORD in text]
    assert leaks == []


@pytest.mark.slow
def test_without_a_storage_url_the_study_is_the_sqlite_file_in_the_sweep_directory(
    avm_data: list[str], tmp_path: Path
) -> None:
    overrides = [*avm_data, f"paths.workdir={tmp_path}", "tracking=none"]
    lines: list[str] = []
    result = sweep.run(overrides, name="local", n_trials=1, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("trial 0: val_mdape")
    database = tmp_path / "sweeps" / "avm" / "local" / "optuna.db"
    assert result.directory == database.parent
    study = optuna.load_study(study_name="local", storage=f"sqlite:///{database}")
    assert [t.number for t in study.trials] == [0]
    # run again with the same name: the stored study continues
    again = sweep.run(overrides, name="local", n_trials=1, log=lines.append)
    assert [t["number"] for t in again.trials] == [0, 1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("storage", "fragment"),
    [
        (
            f"postgresql+psycopg://modelyard:{PASSWORD}@127.0.0.1:{_closed_port()}/optuna",
            "sweep.storage postgresql+psycopg://modelyard:***@127.0.0.1:",
        ),
        ("not a url", "sweep.storage is not a database URL"),
        (f"nosuchdb://modelyard:{PASSWORD}@host/db", "cannot open the study storage"),
    ],
)
def test_a_bad_or_unreachable_storage_url_is_one_line_without_the_password(
    storage: str, fragment: str, tmp_path: Path
) -> None:
    process = _start(
        ["project=avm", "tracking=none", "--name", "s", "--trials", "1"], tmp_path, storage
    )
    out, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 2, (out, err)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert fragment in lines[0]
    assert PASSWORD not in lines[0] and "Traceback" not in err


def test_a_shared_study_needs_a_name_every_worker_passes() -> None:
    with pytest.raises(sweep.ConfigError, match="needs --name"):
        sweep.run(["project=avm", "tracking=none", "sweep.storage=sqlite:///shared.db"], n_trials=1)


def test_mask_hides_only_the_password() -> None:
    assert mask(f"postgresql+psycopg://me:{PASSWORD}@db:5432/optuna") == (
        "postgresql+psycopg://me:***@db:5432/optuna"
    )
    assert mask("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"


def test_a_trial_numbered_past_the_total_is_refused_untrained_and_stops_its_worker() -> None:
    study = optuna.create_study()
    budget = sweep.Budget(per_process=10, total=2)
    study.ask(), study.ask()  # the budget's two trials, drawn by other workers, still running
    assert budget.full(study)
    trained: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        budget.check(trial)
        trained.append(trial.number)
        return 1.0

    # what a worker that drew its trial just after the last slot went does
    study.optimize(objective, n_trials=10, catch=(sweep.OverBudgetError,))
    assert trained == []
    late = study.trials[-1]
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert late.state == optuna.trial.TrialState.FAIL and late.user_attrs[sweep.OVER_BUDGET]


def test_only_one_worker_wins_a_claim_and_the_others_see_who(tmp_path: Path) -> None:
    storage = open_storage(None, tmp_path, heartbeat_s=60)
    won = claim(storage, "s:registration:trial-3", "host-a:1")
    lost = claim(storage, "s:registration:trial-3", "host-b:2")
    assert won.won and not lost.won
    assert lost.record.user_attrs["worker"] == "host-a:1"


def _finished_trial(number: int, value: float, run_dir: Path, worker: str) -> Any:
    return optuna.trial.create_trial(
        value=value,
        params={"model.lr": 0.003},
        distributions={"model.lr": optuna.distributions.FloatDistribution(0.0005, 0.01)},
        user_attrs={
            "run_dir": str(run_dir),
            "overrides": ["model.lr=0.003"],
            "worker": worker,
        },
    )


def test_a_best_trial_from_another_machine_is_summarised_from_its_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers with their own disks: the best trial's run directory is on another machine, so
    best.yaml is composed from its overrides (password masked), and nobody registers it here."""
    monkeypatch.setenv("MODELYARD_SWEEP_STORAGE", f"postgresql+psycopg://me:{PASSWORD}@db/optuna")
    storage = open_storage(None, tmp_path, heartbeat_s=60)
    study = optuna.create_study(study_name="s", storage=storage)
    study.add_trial(_finished_trial(0, 0.2, tmp_path / "elsewhere" / "trial-000", "pod-b:1"))
    overrides = ["project=avm", "experiment=quick", "tracking=none"]
    result = sweep._summarise(study, tmp_path, "val_mdape", overrides)
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["model"]["lr"] == 0.003
    assert best["sweep"]["storage"] == "postgresql+psycopg://me:***@db/optuna"
    assert (tmp_path / "best_overrides.txt").read_text() == "model.lr=0.003\n"

    lines: list[str] = []
    registered = sweep._register_once(storage, study, overrides, result, "pod-a:1", lines.append)
    assert registered is None
    assert "ran on pod-b:1" in lines[0] and "not on this machine" in lines[0]


def test_no_worker_registers_while_another_still_runs_a_trial(tmp_path: Path) -> None:
    study = optuna.create_study()
    study.add_trial(_finished_trial(0, 0.2, tmp_path / "trial-000", "pod-a:1"))
    study.ask()  # trial 1, running on another worker
    result = sweep.SweepResult(tmp_path, 0.2, ["model.lr=0.003"], tmp_path / "trial-000", [])
    lines: list[str] = []
    assert sweep._register_once(None, study, [], result, "pod-a:1", lines.append) is None
    assert lines == [
        "not registering: trials [1] still run on other workers; "
        "the last worker to finish registers the best trial"
    ]


def _fresh_database(server: PostgresServer, name: str) -> str:
    engine = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def _open_at_once(url: str, workers: int, tmp_path: Path) -> list[BaseException]:
    """``workers`` threads open the storage and the study at the same instant."""
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            storage = open_storage(url, tmp_path, heartbeat_s=60)
            optuna.create_study(study_name="race", storage=storage, load_if_exists=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_workers_starting_together_on_an_empty_database_all_join_the_study(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """The Kubernetes Job's pods start at once on an empty database: every one of them creating
    Optuna's tables at the same moment must not fail any of them."""
    url = _fresh_database(postgres, "empty")
    assert _open_at_once(url, 4, tmp_path) == []
    assert optuna.get_all_study_names(storage=url) == ["race"]
