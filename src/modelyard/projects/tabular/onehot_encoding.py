"""One-hot encoding of a categorical feature, with a shared "other" column.

Categorical ``c`` gets the columns ``c=<category>`` for the ``max_categories`` most frequent
training categories (most frequent first, ties broken by the category string, so the layout is
deterministic), then ``c=__other__`` for every category not kept or not seen in training, then
(``required=False`` only) ``c=__missing__``. A missing value of a required feature counts as
"other".
"""

from collections import Counter
from typing import Any, Final

import numpy as np

from modelyard.projects.tabular.feature_values import Block

OTHER: Final = "__other__"
MISSING: Final = "__missing__"


def kept_categories(values: list[str | None], max_categories: int) -> list[str]:
    """The ``max_categories`` most frequent categories, most frequent first, ties by name."""
    counts = Counter(value for value in values if value is not None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [category for category, _ in ranked[: max(max_categories, 0)]]


def onehot_block(spec: dict[str, Any], values: list[str | None]) -> Block:
    categories: list[str] = spec["categories"]
    index = {category: i for i, category in enumerate(categories)}
    other = len(categories)
    width = other + (1 if spec["required"] else 2)
    missing_slot = other if spec["required"] else other + 1
    slots = np.array(
        [missing_slot if value is None else index.get(value, other) for value in values],
        dtype=np.int64,
    )
    onehot = np.zeros((len(values), width), dtype=np.float64)
    onehot[np.arange(len(values)), slots] = 1.0
    return list(onehot.T)


def onehot_names(spec: dict[str, Any]) -> list[str]:
    labels = [*spec["categories"], OTHER] + ([] if spec["required"] else [MISSING])
    return [f"{spec['name']}={label}" for label in labels]
