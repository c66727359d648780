"""End to end on the real shared data: fetch -> prepare -> train(quick) -> evaluate -> export ->
real server on 127.0.0.1 -> HTTP prediction, with parity between every representation."""

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from modelyard.core.bundle import load_bundle
from modelyard.projects.nilm.inference import predict_series
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.nilm.storage import load_house
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server
from modelyard.stages import evaluate, export
from modelyard.stages.export import ExportError
from modelyard.tracking.mlflow_backend import client_for
from trained_pipelines import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APPLIANCES = ["kettle", "microwave", "dishwasher", "washing_machine"]


@pytest.fixture
def pipeline(nilm_pipeline: Pipeline) -> Pipeline:
    """The session's quick NILM run (see ``trained_pipelines.py``)."""
    return nilm_pipeline


def test_fetch_and_prepare_cover_both_houses(pipeline: Pipeline) -> None:
    assert len(pipeline.fetched.fetched) == 22
    houses = pipeline.prepared["houses"]
    assert set(houses) == {"ukdale_house2", "refit_house2"}
    assert houses["ukdale_house2"]["intervals"] >= 204_948
    assert houses["refit_house2"]["rows_in"] == 702_720


def test_training_run_is_complete_and_reproducible_on_disk(pipeline: Pipeline) -> None:
    run_dir = pipeline.trained.run_dir
    assert pipeline.trained.checkpoint.is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    # the resolved config, with the quick experiment's overrides applied and paths resolved
    assert saved["model"]["hidden"] == pipeline.cfg.model.hidden == 128
    assert saved["trainer"]["limit_train_batches"] == 60
    assert saved["paths"]["prepared"] == str(pipeline.cfg.paths.prepared)
    assert "${" not in (run_dir / "config.yaml").read_text()
    summary = json.loads((run_dir / "train.json").read_text())
    assert len(summary["data_fingerprint"]) == 64
    assert (run_dir / "logs" / "metrics.csv").is_file()
    assert (run_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_on_an_unseen_house_directory(
    pipeline: Pipeline, nilm_source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "chosen" / "metrics.json"
    metrics, path = evaluate.run(
        pipeline.cfg,
        model=pipeline.trained.run_dir,
        source=nilm_source / "ukdale_house2",
        output=output,
    )
    assert path == output and output.is_file()
    on_disk = json.loads(output.read_text())
    assert set(on_disk["houses"]) == {"ukdale_house2"}
    overall = on_disk["overall"]
    assert set(overall) == set(APPLIANCES)
    for name in APPLIANCES:
        scores = overall[name]
        assert scores["model"]["mae_w"] >= 0
        assert scores["baseline_mean"]["f1"] == 0.0  # the mean never crosses an on-threshold
        assert scores["mae_ratio_to_baseline"] == pytest.approx(
            scores["model"]["mae_w"] / scores["baseline_mean"]["mae_w"]
        )
        errors = scores["model_errors"]
        parts = errors["false_on_w"] + errors["missed_w"] + errors["right_state_w"]
        assert parts == pytest.approx(scores["model"]["mae_w"], rel=1e-6)
        assert set(errors["false_on_while_on"]) == set(APPLIANCES) - {name}
    # even the quick model beats always-predict-the-mean on the kettle
    assert overall["kettle"]["model"]["mae_w"] < overall["kettle"]["baseline_mean"]["mae_w"]
    plots = on_disk["houses"]["ukdale_house2"]["plots"]
    assert plots and all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in plots)
    assert metrics["overall"] == overall


def test_the_whole_run_is_tracked_in_the_embedded_mlflow_store(pipeline: Pipeline) -> None:
    """Default tracking: one MLflow run holds config, curves, evaluation, bundle and provenance."""
    cfg, run_dir = pipeline.cfg, pipeline.trained.run_dir
    record = json.loads((run_dir / "tracking.json").read_text())
    assert record["backend"] == "mlflow"
    assert record["location"] == f"sqlite:///{cfg.paths.workdir}/mlflow.db"
    assert pipeline.bundle.manifest.tracking == record
    client = client_for(record["location"])
    run = client.get_run(record["run_id"])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    summary = json.loads((run_dir / "train.json").read_text())
    assert tags["git_commit"] == str(summary["git_commit"])
    assert tags["git_dirty"] == str(summary["git_dirty"])
    assert tags["data_fingerprint"] == summary["data_fingerprint"]
    assert tags["bundle_version"] == pipeline.bundle.manifest.version
    assert tags["energy_measured"] == str(summary["energy"]["measured"])
    assert params["model.hidden"] == "128" and params["trainer.max_epochs"] == "2"
    assert params["version.torch"] == torch.__version__
    # per-epoch validation scores, as Lightning's own CSV log has them
    history = client.get_metric_history(record["run_id"], "val_rel_mae")
    logged = pd.read_csv(run_dir / "logs" / "metrics.csv").dropna(subset=["val_rel_mae"])
    assert [m.step for m in history] == [0, 1]
    assert [m.value for m in history] == pytest.approx(logged["val_rel_mae"].tolist())
    assert metrics["best_val_rel_mae"] == pytest.approx(summary["best_score"])
    evaluation = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    kettle = evaluation["overall"]["kettle"]["model"]["mae_w"]
    assert metrics["eval/overall/kettle/model/mae_w"] == pytest.approx(kettle)
    artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
    expected = {"config.yaml", "environment.json", "train.json", "training_curves.png", "eval"}
    assert expected | {"bundle", "logs", "preprocessing.json"} <= artifacts
    bundle_files = {a.path for a in client.list_artifacts(record["run_id"], "bundle")}
    assert bundle_files == {
        "bundle/model.onnx",
        "bundle/manifest.json",
        "bundle/reference_profile.json",
        "bundle/examples",
    }


def test_bundle_manifest_and_parity(pipeline: Pipeline) -> None:
    bundle = load_bundle(pipeline.bundle.path)  # verifies sha256 again
    manifest = bundle.manifest
    assert manifest.project == "nilm"
    assert manifest.parity is not None
    assert manifest.parity.max_abs_diff <= manifest.parity.tolerance <= 1e-4
    assert manifest.inputs[0].shape == ["batch", 99]
    assert manifest.outputs[0].shape == ["batch", 4]
    assert manifest.preprocessing["appliances"] == APPLIANCES
    assert (
        manifest.data_fingerprint
        == json.loads((pipeline.trained.run_dir / "train.json").read_text())["data_fingerprint"]
    )
    assert "overall" in manifest.metrics
    assert manifest.config["model"]["hidden"] == 128
    # the example: a day of the test house, mains and the true appliance power, at 1 minute
    (example,) = manifest.examples
    assert example.name.startswith("ukdale_house2-") and example.media_type == "text/csv"
    found = bundle.example(example.name)
    assert found is not None
    lines = found[1].decode().splitlines()
    assert lines[0] == ",".join(["Time", "mains", *APPLIANCES]) and len(lines) == 1441
    assert lines[1].split(",")[0].endswith(" 00:00:00")


def test_bundle_and_run_score_the_same(pipeline: Pipeline, tmp_path: Path) -> None:
    from_run = pipeline.metrics  # evaluate.run(cfg, model=the run's directory), by the fixture
    from_bundle, _ = evaluate.run(
        pipeline.cfg, model=pipeline.bundle.path, output=tmp_path / "bundle.json"
    )
    for name in APPLIANCES:
        assert from_bundle["overall"][name]["model"]["mae_w"] == pytest.approx(
            from_run["overall"][name]["model"]["mae_w"], rel=1e-3, abs=1e-3
        )


def test_real_server_answers_like_offline_inference(pipeline: Pipeline) -> None:
    house = load_house(Path(pipeline.cfg.paths.prepared) / "ukdale_house2.npz")
    day = house.aggregate[1440 * 30 : 1440 * 31].astype(np.float64)
    manifest = pipeline.bundle.manifest
    expected = predict_series(
        day.astype(np.float32),
        OnnxModel(pipeline.bundle.model_path).run,
        Normalisation.from_json(manifest.preprocessing["normalisation"]),
        99,
    )
    with running_server(pipeline.bundle.path) as url:
        info = httpx.get(f"{url}/info", timeout=10).json()
        assert info["version"] == manifest.version
        response = httpx.post(f"{url}/predict", json={"aggregate_w": day.tolist()}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        bad = httpx.post(f"{url}/predict", json={"aggregate_w": day[:10].tolist()}, timeout=30)
        assert bad.status_code == 422
    assert body["length"] == 1440
    for j, name in enumerate(APPLIANCES):
        assert len(body["appliances"][name]) == 1440
        np.testing.assert_allclose(body["appliances"][name], expected[:, j], atol=0.01)


def test_export_refuses_a_model_beyond_tolerance(pipeline: Pipeline, tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with pytest.raises(ExportError, match="differs from the trained model"):
        export.run(pipeline.cfg, run_dir=pipeline.trained.run_dir, output=target, tolerance=-1.0)
    assert not target.exists()
    assert not list(tmp_path.iterdir())  # no staging directory left behind either
