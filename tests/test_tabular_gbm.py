"""LightGBM as a tabular model: trained, checkpointed without pickles, exported to ONNX with a
parity check, evaluated and served exactly like the MLP."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from modelyard.core.bundle import load_bundle
from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError
from modelyard.core.run_dir import RunDir
from modelyard.projects.tabular.gbm import (
    GradientBoostedRegressor,
    float32_exact_thresholds,
    saved_text_model,
)
from modelyard.projects.tabular.target_scaling import decode_target
from modelyard.projects.tabular.task import TabularTask
from modelyard.serving.app import create_app
from modelyard.stages import evaluate, export, fetch, prepare, train
from tabular_fixtures import synthetic_sales


@pytest.fixture(scope="module")
def gbm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    source = tmp_path_factory.mktemp("source")
    (source / "boliga_sales_2021.csv").write_text(synthetic_sales(400), encoding="utf-8")
    cfg = load_config(
        [
            "project=avm",
            "model=lightgbm",
            "tracking=none",
            f"paths.workdir={tmp_path_factory.mktemp('work')}",
            f"project.data.source={source}",
            "project.data.files=[]",
            "model.n_estimators=200",
            "model.early_stopping_rounds=20",
        ]
    )
    fetch.run(cfg, progress=False)
    prepare.run(cfg)
    return cfg, train.run(cfg).run_dir


def test_checkpoint_is_lightgbm_text_in_its_own_file(gbm_run: tuple[object, Path]) -> None:
    _, run_dir = gbm_run
    run = RunDir(run_dir)
    assert saved_text_model(run) == run.lightgbm_model
    assert run.lightgbm_model.name == "model.lgbm.txt"
    assert run.lightgbm_model.read_text().startswith("tree")  # LightGBM's text, not a pickle
    assert not run.checkpoint.exists()  # the Lightning checkpoint's name is not reused
    summary = run.read_train_summary()
    assert summary["checkpoint"] == str(run.lightgbm_model)
    assert summary["monitor"] == "val_mdape"
    assert 0 < summary["best_score"] < 1
    assert 1 <= summary["epochs"] <= 200


def test_export_parity_evaluate_and_serve(gbm_run: tuple[object, Path], tmp_path: Path) -> None:
    cfg, run_dir = gbm_run
    bundle = export.run(cfg, run_dir=run_dir, output=tmp_path / "bundle")  # type: ignore[arg-type]
    assert bundle.manifest.name == "avm-lightgbm"
    assert bundle.manifest.parity is not None and bundle.manifest.parity.max_abs_diff <= 1e-4
    from_run, _ = evaluate.run(cfg, model=run_dir, output=tmp_path / "run.json")  # type: ignore[arg-type]
    from_bundle, _ = evaluate.run(cfg, model=bundle.path, output=tmp_path / "b.json")  # type: ignore[arg-type]
    assert from_bundle["model"]["mdape"] == pytest.approx(from_run["model"]["mdape"], abs=1e-4)
    # prices in the synthetic table depend on the zip code: the trees must beat a global guess
    assert from_run["model"]["mdape"] < 0.5
    client = TestClient(create_app(load_bundle(bundle.path)))
    answer = client.post(
        "/predict", json={"area_m2": 80, "zip_code": "2100", "sale_date": "2021-10-01"}
    )
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert prediction["total_price"] == pytest.approx(prediction["price_per_m2"] * 80, abs=1)
    cheap = client.post(
        "/predict", json={"area_m2": 80, "zip_code": "9000", "sale_date": "2021-10-01"}
    ).json()["predictions"][0]
    assert cheap["price_per_m2"] < prediction["price_per_m2"]  # 9000 Aalborg < 2100 Copenhagen


def test_loaded_model_predicts_like_the_trained_one(gbm_run: tuple[object, Path]) -> None:
    """The reloaded text checkpoint scores the validation rows exactly as training reported."""
    cfg, run_dir = gbm_run
    task = TabularTask(cfg)  # type: ignore[arg-type]
    model = task.load_model(RunDir(run_dir))
    assert isinstance(model, GradientBoostedRegressor)
    datamodule = task.datamodule()
    datamodule.setup()
    assert datamodule.val_set is not None
    x_val, y_val = (t.numpy() for t in datamodule.val_set.tensors)
    scores = model.predict(x_val)
    assert scores.shape == (len(x_val), 1) and scores.dtype == np.float32
    true = decode_target(datamodule.target_params, y_val.ravel())
    predicted = decode_target(datamodule.target_params, scores.ravel())
    mdape = float(np.median(np.abs(predicted - true) / np.abs(true)))
    reported = RunDir(run_dir).read_train_summary()["best_score"]
    assert mdape == pytest.approx(reported, rel=1e-6)


def test_old_run_with_lightgbm_text_as_best_ckpt_still_loads_and_exports(
    gbm_run: tuple[object, Path], tmp_path: Path
) -> None:
    """Runs trained before LightGBM had its own file name saved its text as best.ckpt."""
    cfg, run_dir = gbm_run
    old = RunDir(tmp_path / "old-run")
    shutil.copytree(run_dir, old.path)
    old.lightgbm_model.rename(old.checkpoint)
    assert saved_text_model(old) == old.checkpoint
    model = TabularTask(cfg).load_model(old)  # type: ignore[arg-type]
    assert isinstance(model, GradientBoostedRegressor)
    bundle = export.run(cfg, run_dir=old.path, output=tmp_path / "bundle")  # type: ignore[arg-type]
    assert bundle.manifest.parity is not None and bundle.manifest.parity.max_abs_diff <= 1e-4
    scores, _ = evaluate.run(cfg, model=old.path, output=tmp_path / "old.json")  # type: ignore[arg-type]
    fresh, _ = evaluate.run(cfg, model=run_dir, output=tmp_path / "new.json")  # type: ignore[arg-type]
    assert scores["model"] == fresh["model"]


def test_a_model_kind_nobody_builds_is_a_clear_config_error(
    gbm_run: tuple[object, Path],
) -> None:
    cfg, _ = gbm_run
    task = TabularTask(OmegaConf.merge(cfg, {"model": {"kind": "xgboost"}}))  # type: ignore[arg-type]
    datamodule = task.datamodule()
    datamodule.setup("fit")
    with pytest.raises(ConfigError, match=r"model\.kind must be one of lightgbm, mlp"):
        task.build_model(datamodule)


def test_thresholds_move_down_to_float32_without_changing_any_float32_decision() -> None:
    text = "tree\ntree_sizes=10 20\nTree=0\nthreshold=0.1 0.5 -1.3 1e-35\nleaf_value=1 2\n"
    fixed = float32_exact_thresholds(text)
    assert "tree_sizes=" not in fixed  # byte sizes would be stale after rewriting numbers
    (line,) = [ln for ln in fixed.splitlines() if ln.startswith("threshold=")]
    new = np.array(line.removeprefix("threshold=").split(), dtype=np.float64)
    old = np.array([0.1, 0.5, -1.3, 1e-35])
    assert np.array_equal(new.astype(np.float32).astype(np.float64), new)  # exactly float32
    assert (new <= old).all()
    # no float32 value lies in (new, old]: every float32 x decides x <= new exactly as x <= old
    above = np.nextafter(new.astype(np.float32), np.float32(np.inf)).astype(np.float64)
    assert (above > old).all()
    assert new[1] == 0.5  # already a float32: unchanged
