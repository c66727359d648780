"""The run directory type: its file names, its checks and the LightGBM file of old runs."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from modelyard.core.errors import ModelyardError
from modelyard.core.run_dir import RunDir
from modelyard.projects.tabular.gbm import saved_text_model
from modelyard.projects.torch_model import TorchModel
from modelyard.projects.trained_model import PredictorModel


def test_every_file_has_its_own_path_inside_the_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    files = [
        run.config,
        run.environment,
        run.preprocessing,
        run.train_summary,
        run.checkpoint,
        run.lightgbm_model,
        run.metrics_csv,
        run.curves,
        run.profile,
        run.evaluation_metrics,
    ]
    assert len(set(files)) == len(files)
    assert all(path.is_relative_to(tmp_path) for path in files)
    assert run.lightgbm_model != run.checkpoint  # LightGBM no longer borrows Lightning's name


def test_an_unfinished_run_is_refused_with_the_files_it_lacks(tmp_path: Path) -> None:
    with pytest.raises(ModelyardError, match="model not found"):
        RunDir(tmp_path / "nowhere").require_trained()
    with pytest.raises(ModelyardError, match=r"best\.ckpt or checkpoints/model\.lgbm\.txt"):
        RunDir(tmp_path).require_trained()
    with pytest.raises(ModelyardError, match="train it again"):
        RunDir(tmp_path).read_preprocessing()
    RunDir(tmp_path).preprocessing.write_text("[1, 2]")
    with pytest.raises(ModelyardError, match="does not hold a JSON object"):
        RunDir(tmp_path).read_preprocessing()


def test_lightgbm_text_is_found_in_its_own_file_and_in_an_old_best_ckpt(tmp_path: Path) -> None:
    new, old, lightning = (RunDir(tmp_path / name) for name in ("new", "old", "lightning"))
    for run in (new, old, lightning):
        run.checkpoints.mkdir(parents=True)
    new.lightgbm_model.write_text("tree\nversion=v4\n")
    old.checkpoint.write_text("tree\nversion=v4\n")  # written before model.lgbm.txt existed
    with zipfile.ZipFile(lightning.checkpoint, "w") as archive:  # torch.save writes a zip
        archive.writestr("archive/data.pkl", b"")
    assert saved_text_model(new) == new.lightgbm_model
    assert saved_text_model(old) == old.checkpoint
    assert saved_text_model(lightning) is None
    assert all(run.is_trained() for run in (new, old, lightning))


class _WithFeatures(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_features_come_from_the_model_that_has_them_and_not_from_a_bundle() -> None:
    batch = np.arange(6, dtype=np.float32).reshape(2, 3)
    torch_model = TorchModel(_WithFeatures())
    np.testing.assert_array_equal(torch_model.predict(batch), [[3.0], [12.0]])
    features = torch_model.embed(batch)
    assert features is not None
    np.testing.assert_array_equal(features, batch * 2)
    assert TorchModel(torch.nn.Identity()).embed(batch) is None
    bundle_like = PredictorModel(lambda b: b[:, :1])
    assert bundle_like.embed(batch) is None
    np.testing.assert_array_equal(bundle_like.predict(batch), batch[:, :1])
