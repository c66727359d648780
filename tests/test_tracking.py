"""Experiment tracking: the tracker interface on a real embedded MLflow store and real W&B files."""

import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from modelyard.core.config import load_config
from modelyard.core.environment import environment_report, key_versions
from modelyard.core.errors import ConfigError
from modelyard.tracking.base import (
    NullTracker,
    TrackedRun,
    TrackingError,
    flatten,
    numeric_metrics,
    safe_key,
)
from modelyard.tracking.factory import resume_tracking, start_tracking
from modelyard.tracking.mlflow_backend import MAX_PARAM_LENGTH, MlflowTracker, client_for


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store/mlflow.db"


def test_flatten_keeps_lists_whole_and_joins_keys() -> None:
    tree = {"model": {"lr": 0.1, "channels": [1, 2]}, "seed": 3}
    assert flatten(tree) == {"model.lr": 0.1, "model.channels": [1, 2], "seed": 3}


def test_numeric_metrics_keeps_finite_numbers_only() -> None:
    metrics = {
        "overall": {"kettle": {"mae": 3.5, "f1": 1, "name": "kettle", "on": True}},
        "bad": float("nan"),
        "inf": float("inf"),
        "weird key!": 2.0,
    }
    assert numeric_metrics(metrics, "eval/") == {
        "eval/overall/kettle/mae": 3.5,
        "eval/overall/kettle/f1": 1.0,
        "eval/weird key_": 2.0,
    }
    assert safe_key("a:b(c)") == "a_b_c_"


def test_tracked_run_round_trip_and_a_corrupt_record(tmp_path: Path) -> None:
    run = TrackedRun("mlflow", "abc", "sqlite:///x.db", "nilm")
    run.save(tmp_path)
    assert TrackedRun.read(tmp_path) == run
    assert TrackedRun.read(tmp_path / "elsewhere") is None
    (tmp_path / "tracking.json").write_text('{"backend": "mlflow"}')
    with pytest.raises(TrackingError, match="not a modelyard tracking record"):
        TrackedRun.read(tmp_path)


def test_mlflow_tracker_records_everything_and_resumes(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    tracker = MlflowTracker.start(uri, "demo", str(tmp_path / "art"), "run-a", {"project": "x"})
    tracker.log_params({"model.lr": 0.01, "long": "v" * (MAX_PARAM_LENGTH + 50)})
    for epoch, loss in enumerate([0.9, 0.5, 0.4]):
        tracker.log_metrics({"val_loss": loss}, step=epoch)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    tracker.log_artifact(tmp_path / "config.yaml")
    tracker.log_artifact(tmp_path / "plots", "evaluation")
    tracker.finish()

    # another process picks the run up from what was saved in the run directory
    tracker.run.save(tmp_path)
    resumed = resume_tracking(tmp_path)
    assert resumed.run == tracker.run
    resumed.log_metrics({"eval/mae": 12.5})
    resumed.set_tags({"bundle_version": "v1"})
    resumed.finish()

    client = client_for(uri)
    stored = client.get_run(tracker.run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.params["model.lr"] == "0.01"
    assert len(stored.data.params["long"]) == MAX_PARAM_LENGTH
    assert stored.data.tags["project"] == "x" and stored.data.tags["bundle_version"] == "v1"
    history = client.get_metric_history(tracker.run.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.4)]
    assert stored.data.metrics["eval/mae"] == 12.5
    artifacts = {a.path for a in client.list_artifacts(tracker.run.run_id)}
    assert artifacts == {"config.yaml", "evaluation"}
    assert [a.path for a in client.list_artifacts(tracker.run.run_id, "evaluation")] == [
        "evaluation/a.png"
    ]
    # the embedded store keeps artifacts where the config says
    assert (tmp_path / "art").is_dir()


def test_a_run_whose_store_is_elsewhere_is_resumed_untracked_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client_for(sqlite_uri(tmp_path))  # an empty but valid store: the run was tracked elsewhere
    TrackedRun("mlflow", "f" * 32, sqlite_uri(tmp_path), "nilm").save(tmp_path)
    with pytest.raises(TrackingError, match="not found in MLflow"):
        resume_tracking(tmp_path, required=True)
    with caplog.at_level(logging.WARNING, logger="modelyard.tracking.factory"):
        tracker = resume_tracking(tmp_path)
    assert isinstance(tracker, NullTracker)
    assert "not found in MLflow" in caplog.text and "going on without tracking" in caplog.text


def test_tracking_none_records_nothing(tmp_path: Path) -> None:
    cfg = load_config(["tracking=none", f"paths.workdir={tmp_path}"])
    tracker = start_tracking(cfg, tmp_path)
    assert isinstance(tracker, NullTracker) and tracker.run is None
    assert not (tmp_path / "tracking.json").exists()
    assert isinstance(resume_tracking(tmp_path), NullTracker)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    cfg = load_config([f"paths.workdir={tmp_path}"])
    OmegaConf.update(cfg, "tracking.backend", "neptune")
    with pytest.raises(ConfigError, match=r"tracking\.backend must be one of mlflow, wandb, none"):
        start_tracking(cfg, tmp_path)


def test_mlflow_config_defaults_to_an_embedded_store_in_the_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    cfg = load_config([f"paths.workdir={tmp_path}", "project=avm"])
    assert cfg.tracking.uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert cfg.registry.uri == cfg.tracking.uri
    assert cfg.tracking.experiment == "avm"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    server = load_config([f"paths.workdir={tmp_path}"])
    assert server.tracking.uri == server.registry.uri == "http://mlflow.example:5000"


def test_wandb_offline_run_is_written_under_the_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb", reason="optional extra (pip install modelyard[wandb])")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: auto mode means offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config([f"paths.workdir={tmp_path}", "tracking=wandb"])
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    tracker = start_tracking(cfg, run_dir, {"git_commit": "abc123"})
    tracker.log_params({"model.lr": 0.004})
    tracker.log_metrics({"val_loss": 0.75}, step=0)
    tracker.log_metrics({"eval_mae_final": 11.0})
    tracker.finish()
    wandb.teardown()  # what the end of the process does: the service flushes the run file

    record = json.loads((run_dir / "tracking.json").read_text())
    assert record["backend"] == "wandb" and record["experiment"] == "modelyard-nilm"
    offline = Path(record["location"])
    assert offline.parent == tmp_path / "wandb" and offline.name.startswith("offline-run-")
    log = next(offline.glob("run-*.wandb")).read_bytes()
    for expected in (b"val_loss", b"eval_mae_final", b"model.lr", b"abc123"):
        assert expected in log


def test_environment_report_lists_the_packages_that_decide_the_numbers() -> None:
    versions = key_versions()
    assert {"python", "torch", "numpy", "mlflow", "modelyard"} <= set(versions)
    report = environment_report()
    assert report["packages"]["torch"] == versions["torch"]  # type: ignore[index]
    assert str(report["python"]).startswith(versions["python"])
