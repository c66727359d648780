"""Lightning DataModule for tables: prepared CSVs -> features fitted on training rows -> tensors.

Rows are already tensors in memory, so batches are cheapest made in the training process
(``num_workers=0``, the default); worker processes are available for parity with the other
projects. Under DDP, Lightning replaces the shuffling sampler with a ``DistributedSampler``.
"""

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader, TensorDataset

from modelyard.projects.tabular.feature_pipeline import FeaturePipeline
from modelyard.projects.tabular.metrics import fit_group_medians
from modelyard.projects.tabular.schema import TableSchema
from modelyard.projects.tabular.table_io import feature_columns, group_keys, read_prepared
from modelyard.projects.tabular.target_scaling import encode_target, fit_target
from modelyard.projects.worker_seeding import check_num_workers, worker_options


class TabularDataModule(L.LightningDataModule):
    def __init__(
        self,
        prepared_dir: Path,
        schema: TableSchema,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.schema = schema
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = check_num_workers(num_workers)
        self.pipeline: FeaturePipeline | None = None
        self.target_params: dict[str, Any] = {}
        self.baseline: dict[str, Any] = {}
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    @property
    def n_inputs(self) -> int:
        assert self.pipeline is not None, "call setup() first"
        return len(self.pipeline.output_names)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = read_prepared(self.prepared_dir, "train", self.schema)
        val = read_prepared(self.prepared_dir, "val", self.schema)
        target = self.schema.target.name
        # Training rows get out-of-fold target codes; validation rows are encoded like requests.
        self.pipeline, x_train = FeaturePipeline.fit_transform(
            self.schema.features,
            feature_columns(train, self.schema),
            self.schema.target,
            train[target].to_numpy(),
        )
        self.target_params = fit_target(self.schema.target, train[target].tolist())
        self.baseline = {
            "group": self.schema.baseline_group,
            **fit_group_medians(group_keys(train, self.schema), train[target].to_numpy()),
        }
        self.train_set = self._tensors(x_train, train)
        x_val = self.pipeline.transform(feature_columns(val, self.schema))
        self.val_set = self._tensors(x_val, val)

    def _tensors(self, x: NDArray[np.float32], frame: Any) -> TensorDataset:
        y = encode_target(self.target_params, frame[self.schema.target.name].to_numpy())
        return TensorDataset(torch.from_numpy(x), torch.from_numpy(y.reshape(-1, 1)))

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        assert self.train_set is not None, "call setup() first"
        options = worker_options(self.train_set, self.num_workers, self.seed)
        # One generator shuffles and draws each epoch's worker base seed, exactly as before
        # workers existed. Workers restart every epoch (not persistent) so that it draws once
        # per epoch with or without them: the batches do not depend on num_workers.
        options["generator"] = torch.Generator().manual_seed(self.seed)
        options["persistent_workers"] = False
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) > self.batch_size,  # BatchNorm needs > 1 row
            **options,
        )

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        assert self.val_set is not None, "call setup() first"
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size * 4,
            **worker_options(self.val_set, self.num_workers, self.seed),
        )
