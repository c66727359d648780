"""DataModule: prepared houses -> time split -> normalisation fitted on training -> windows."""

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from modelyard.core.errors import ConfigError
from modelyard.projects.nilm.augmentation import ActivationInjector, ActivationRule
from modelyard.projects.nilm.dataset import (
    WindowBatches,
    batch_loader,
    build_windows,
    oversample_active,
)
from modelyard.projects.nilm.normalisation import Normalisation, fit_normalisation
from modelyard.projects.nilm.preparation import PreparedHouse
from modelyard.projects.nilm.splits import split_by_time
from modelyard.projects.nilm.storage import list_prepared, load_house
from modelyard.projects.worker_seeding import check_num_workers


class NilmDataModule(L.LightningDataModule):
    def __init__(
        self,
        prepared_dir: Path,
        train_houses: Sequence[str],
        appliances: Sequence[str],
        window: int,
        val_fraction: float,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        on_threshold_w: Sequence[float] = (),
        oversample_on: int = 1,
        augment_probability: float = 0.0,
        augment_scale: tuple[float, float] = (1.0, 1.0),
        activation_rules: Sequence[ActivationRule] | None = None,
    ) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.train_houses = list(train_houses)
        self.appliances = list(appliances)
        self.window = window
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = check_num_workers(num_workers)
        self.on_threshold_w = list(on_threshold_w)
        self.oversample_on = oversample_on
        self.augment_probability = augment_probability
        self.augment_scale = augment_scale
        # How activations are cut for augmentation; default: runs above the on-threshold.
        self.activation_rules = list(activation_rules) if activation_rules is not None else None
        self.normalisation: Normalisation | None = None
        self.train_windows: WindowBatches | None = None
        self.val_windows: WindowBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_windows is not None:
            return
        available = list_prepared(self.prepared_dir)
        unknown = [h for h in self.train_houses if h not in available]
        if unknown:
            raise ConfigError(
                f"training houses {unknown} are not prepared in {self.prepared_dir} "
                f"(prepared: {available or 'none'}); run `modelyard data prepare` or fix "
                "project.data.train_houses"
            )
        houses = [load_house(self.prepared_dir / f"{name}.npz") for name in self.train_houses]
        columns = self._target_columns(houses[0].appliances)
        split = split_by_time(houses, self.val_fraction)
        self.normalisation = fit_normalisation(
            [h.aggregate for h in split.train],
            [h.targets[:, columns] for h in split.train],
            [h.valid for h in split.train],
        )
        self.train_windows = oversample_active(
            build_windows(split.train, columns, self.window, self.normalisation),
            self.on_threshold_w,
            self.normalisation,
            self.oversample_on,
        )
        if self.augment_probability > 0:
            self.train_windows.augment = self._injector(split.train, columns)
        self.val_windows = build_windows(split.val, columns, self.window, self.normalisation)
        if len(self.train_windows) == 0:
            raise ConfigError(
                f"no gap-free window of {self.window} readings in the training houses"
            )

    def _injector(
        self, houses: Sequence[PreparedHouse], columns: Sequence[int]
    ) -> ActivationInjector:
        """Activations of each appliance, cut from the training part of the training houses."""
        assert self.normalisation is not None
        rules = self.activation_rules or [
            ActivationRule(threshold, max_pause=3, min_length=1, max_length=self.window)
            for threshold in self.on_threshold_w
        ]
        pools = [
            [
                activation
                for house in houses
                for activation in rule.cut(house.targets[:, column], house.valid)
            ]
            for column, rule in zip(columns, rules, strict=True)
        ]
        return ActivationInjector(
            activations=pools,
            probability=self.augment_probability,
            scale_range=self.augment_scale,
            stretch_ranges=[rule.stretch for rule in rules],
            normalisation=self.normalisation,
            seed=self.seed,
        )

    def _target_columns(self, prepared: Sequence[str]) -> list[int]:
        missing = [a for a in self.appliances if a not in prepared]
        if missing:
            raise ConfigError(
                f"appliances {missing} were not prepared (prepared: {list(prepared)}); "
                "re-run `modelyard data prepare` with them in the project.appliances table"
            )
        return [list(prepared).index(a) for a in self.appliances]

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        assert self.train_windows is not None, "call setup() first"
        return batch_loader(
            self.train_windows,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        assert self.val_windows is not None, "call setup() first"
        return batch_loader(
            self.val_windows,
            self.batch_size * 4,
            shuffle=False,
            seed=self.seed,
            num_workers=self.num_workers,
        )
