"""Splits: by house for testing (a house never seen in training), by time for validation.

Validation takes the last ``val_fraction`` of each training house's timeline. Windows are drawn
separately inside each part, so no training window contains a validation reading: the parts are
disjoint in time and a window never spans the cut.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from modelyard.core.errors import ConfigError
from modelyard.projects.nilm.preparation import PreparedHouse


@dataclass(frozen=True)
class HouseSplit:
    train: list[PreparedHouse]
    val: list[PreparedHouse]


def check_house_split(train_houses: Sequence[str], test_houses: Sequence[str]) -> None:
    """A test house must never also be a training house."""
    if not train_houses:
        raise ConfigError("data.train_houses is empty: name at least one training house")
    overlap = sorted(set(train_houses) & set(test_houses))
    if overlap:
        raise ConfigError(f"houses {overlap} are both training and test houses")


def split_by_time(houses: Sequence[PreparedHouse], val_fraction: float) -> HouseSplit:
    """Cut each house at ``1 - val_fraction`` of its length: training before, validation after."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for house in houses:
        cut = round(len(house) * (1.0 - val_fraction))
        train.append(house.slice(0, cut))
        if cut < len(house):
            val.append(house.slice(cut, len(house)))
    return HouseSplit(train=train, val=val)
