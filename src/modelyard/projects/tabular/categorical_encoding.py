"""A categorical feature's columns: each of its ``encodings``, in one fixed order.

Values are compared as category keys (:func:`.feature_values.category_key`), so the zip code
``2100``, ``2100.0`` and ``"2100"`` are one category. The columns of the encodings a feature lists
always follow in this order, whatever order the schema lists them in: ``onehot``
(:mod:`.onehot_encoding`, the default), ``target`` (:mod:`.target_encoding`), ``number``
(:mod:`.number_encoding`).
"""

from typing import Any

from modelyard.projects.tabular.feature_values import Block
from modelyard.projects.tabular.number_encoding import fit_number, number_block, number_names
from modelyard.projects.tabular.onehot_encoding import kept_categories, onehot_block, onehot_names
from modelyard.projects.tabular.schema import CategoricalFeature
from modelyard.projects.tabular.target_encoding import Encoded, target_block, target_names


def fit_categorical(feature: CategoricalFeature, values: list[str | None]) -> dict[str, Any]:
    """Kept one-hot categories and, with the ``number`` encoding, the numbers' statistics.

    Target-encoding statistics need the target and the parents' estimates:
    :func:`.target_encoding.fit_target_encoding` adds them.
    """
    onehot = "onehot" in feature.encodings
    spec: dict[str, Any] = {
        "name": feature.name,
        "required": feature.required,
        "categories": kept_categories(values, feature.max_categories) if onehot else [],
        "encodings": list(feature.encodings),
    }
    if "number" in feature.encodings:
        spec["number"] = fit_number(feature.name, values)
    return spec


def categorical_block(
    spec: dict[str, Any], values: list[str | None], codes: Encoded | None
) -> Block:
    """One-hot, then target-encoded (estimate, count), then number columns, as configured."""
    block: Block = []
    if "onehot" in spec["encodings"]:
        block.extend(onehot_block(spec, values))
    if codes is not None:
        block.extend(target_block(spec, codes))
    if "number" in spec["encodings"]:
        block.extend(number_block(spec, values))
    return block


def categorical_names(spec: dict[str, Any]) -> list[str]:
    names: list[str] = []
    if "onehot" in spec["encodings"]:
        names.extend(onehot_names(spec))
    if "target" in spec["encodings"]:
        names.extend(target_names(spec))
    if "number" in spec["encodings"]:
        names.extend(number_names(spec))
    return names
