"""Hyperparameter sweeps: search-space validation, pruning inside a real Lightning fit, and a
real Optuna study over kc_house trials tracked in an embedded MLflow store."""

import json
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError
from modelyard.registry.store import open_registry
from modelyard.stages import sweep
from modelyard.tracking.mlflow_backend import client_for
from modelyard.tracking.optuna_pruning import PruningCallback
from quiet_trainer import quiet_trainer


def test_search_space_is_validated_with_clear_messages() -> None:
    good = {
        "model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.hidden": {"type": "categorical", "choices": [[64, 32], [128]]},
        "model.layers": {"type": "int", "low": 1, "high": 4},
    }
    assert sweep.parse_space(good) == good
    bad = {
        "empty": ({}, "sweep.params is empty"),
        "type": ({"a": {"type": "normal"}}, "type must be one of float, int, categorical"),
        "bounds": ({"a": {"type": "float", "low": 1}}, "needs 'low' and 'high'"),
        "order": ({"a": {"type": "int", "low": 5, "high": 1}}, "low must be below high"),
        "log": ({"a": {"type": "float", "low": 0, "high": 1, "log": True}}, "log scale"),
        "choices": ({"a": {"type": "categorical", "choices": []}}, "non-empty 'choices'"),
    }
    for space, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            sweep.parse_space(space)


def test_trial_values_become_hydra_overrides_that_compose() -> None:
    overrides = [
        sweep.as_override("model.lr", 0.00123),
        sweep.as_override("model.channels", [64, 32]),
        sweep.as_override("model.loss", "mae"),
    ]
    assert overrides == ["model.lr=0.00123", "model.channels=[64, 32]", 'model.loss="mae"']
    cfg = load_config(["project=nilm", *overrides])
    assert cfg.model.lr == 0.00123 and list(cfg.model.channels) == [64, 32]
    assert cfg.model.loss == "mae"


def test_every_project_declares_a_search_space_that_composes() -> None:
    for project in ("nilm", "avm", "kc_house", "eurosat", "plants"):
        cfg = load_config([f"project={project}"])
        space = sweep.parse_space(cfg.sweep.params)
        for key, spec in space.items():
            value = spec["choices"][0] if spec["type"] == "categorical" else spec["low"]
            load_config([f"project={project}", sweep.as_override(key, value)])


def test_sweeps_refuse_ddp() -> None:
    with pytest.raises(ConfigError, match="use trainer=cpu"):
        sweep.run(["trainer=ddp", "tracking=none"], n_trials=1)


class ConstantLoss(L.LightningModule):
    """A tiny real model whose validation loss is whatever it is told (to steer the pruner)."""

    def __init__(self, val_loss: float) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.val_loss = val_loss

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: list[torch.Tensor], index: int) -> None:
        self.log("val_loss", self.val_loss)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(val_loss: float, callback: L.Callback) -> L.Trainer:
    data = TensorDataset(torch.randn(32, 2), torch.randn(32, 1))
    trainer = quiet_trainer(max_epochs=6, callbacks=[callback], num_sanity_val_steps=0)
    trainer.fit(ConstantLoss(val_loss), DataLoader(data, batch_size=8), DataLoader(data))
    return trainer


def test_pruning_callback_stops_a_trial_worse_than_the_median() -> None:
    study = optuna.create_study(
        direction="minimize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1),
    )
    good = study.ask()
    good_callback = PruningCallback(good, "val_loss")
    assert _fit(0.1, good_callback).current_epoch == 6  # nothing to compare with: never pruned
    assert good_callback.pruned_at is None
    study.tell(good, 0.1)

    bad = study.ask()
    bad_callback = PruningCallback(bad, "val_loss")
    trainer = _fit(5.0, bad_callback)
    assert bad_callback.pruned_at == 1  # the first epoch after the warm-up
    assert trainer.current_epoch == 2
    assert bad.storage.get_trial(bad._trial_id).intermediate_values == {0: 5.0, 1: 5.0}


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_sweep_tracks_every_trial_saves_the_best_and_registers_it(
    kc_house_data: list[str], tmp_path: Path
) -> None:
    overrides = [
        *kc_house_data,
        "experiment=quick",
        f"paths.workdir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=2",
        "sweep.sampler.startup_trials=2",
    ]
    lines: list[str] = []
    result = sweep.run(overrides, name="s1", n_trials=3, register_best=True, log=lines.append)

    assert result.directory == tmp_path / "sweeps" / "kc_house" / "s1"
    study = json.loads((result.directory / "study.json").read_text())
    assert [t["number"] for t in study["trials"]] == [0, 1, 2]
    assert study["monitor"] == "val_mdape"
    complete = [t for t in study["trials"] if t["state"] == "COMPLETE"]
    assert complete and result.best_value == min(t["value"] for t in complete)
    assert len(lines) == 4  # one line per trial, one for the registration

    # the saved best config is the best trial's, and its overrides reproduce it
    best = yaml.safe_load((result.directory / "best.yaml").read_text())
    best_trial = next(t for t in complete if t["value"] == result.best_value)
    assert best["model"]["lr"] == pytest.approx(best_trial["params"]["model.lr"])
    replayed = load_config([*overrides, *result.best_overrides])
    assert replayed.model.lr == pytest.approx(best["model"]["lr"])
    assert replayed.model.dropout == pytest.approx(best["model"]["dropout"])

    # every trial is a child run of the sweep's run in the embedded MLflow store
    client = client_for(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("kc_house")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "s1")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["trial-000", "trial-001", "trial-002"]
    assert parent.data.metrics["best_val_mdape"] == pytest.approx(result.best_value)
    history = client.get_metric_history(parent.info.run_id, "trial_val_mdape")
    assert sorted(m.step for m in history) == [t["number"] for t in complete]

    # --register-best: the best trial's bundle is now a registered version
    assert result.registered == "kc_house/1"
    versions = open_registry(load_config(overrides)).versions("kc_house")
    assert [v.version for v in versions] == ["1"]

    # the study is stored: running the same sweep again adds trials instead of starting over
    again = sweep.run(overrides, name="s1", n_trials=1, log=lines.append)
    assert [t["number"] for t in again.trials] == [0, 1, 2, 3]
