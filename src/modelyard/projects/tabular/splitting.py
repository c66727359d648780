"""Deterministic train/validation/test splits of a table.

``random``: a seeded permutation. ``time``: the newest ``test_fraction`` of rows (by the time
column) is the test set and the newest ``val_fraction`` of the rest is validation, which is how a
valuation model is used: trained on past sales, asked about new ones.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.tabular.schema import SplitSpec


@dataclass(frozen=True)
class TableSplit:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def split_table(frame: pd.DataFrame, spec: SplitSpec) -> TableSplit:
    rows = len(frame)
    n_test = round(rows * spec.test_fraction)
    n_val = round((rows - n_test) * spec.val_fraction)
    if rows - n_test - n_val < 1 or n_test < 1 or n_val < 1:
        raise DataError(f"{rows} rows are too few for a train/validation/test split")
    if spec.method == "time":
        column = str(spec.time_column)
        if column not in frame.columns:
            raise ConfigError(f"split.time_column {column!r} is not a column of the table")
        order = np.argsort(frame[column].to_numpy(), kind="stable")
    else:
        order = np.random.default_rng(spec.seed).permutation(rows)
    train_end = rows - n_test - n_val
    return TableSplit(
        train=frame.iloc[order[:train_end]].reset_index(drop=True),
        val=frame.iloc[order[train_end : train_end + n_val]].reset_index(drop=True),
        test=frame.iloc[order[train_end + n_val :]].reset_index(drop=True),
    )
