"""Hierarchical target encoding of categories: a category's typical target, shrunk to its parent's.

A street or a building has too few sales for a one-hot column each, yet it is where most of the
price signal lives. Target encoding turns the category into one number: the mean (log) target of
its training rows, pulled towards a coarser estimate in proportion to how little evidence there
is. With ``smoothing`` ``k``, ``count`` training rows of the category and their target ``sum``::

    estimate = (sum + k * prior) / (count + k)

where ``prior`` is the parent feature's estimate for the same row (e.g. the street's estimate for
a building, the zip code's for a street) or, for a feature without a parent, the mean training
target. A category never seen in training (or missing) therefore gets exactly its parent's
estimate, and a building with one sale moves only half-way from its street's (``k = 1``).

Training rows are encoded **out of fold**: rows are dealt into ``folds`` groups (a seeded
permutation) and each group is encoded with statistics from the other groups only, so no row's
own target leaks into its features; a model trained on in-sample encodings would learn to trust
them far more than it should on new rows. Every other row (validation, test, a request) is
encoded with statistics from all training rows.

In the feature pipeline a target-encoded categorical ``c`` gives two columns: ``c__target``, the
code above, and ``c__target_count``, ``log1p`` of the category's training rows; both standardised
with the out-of-fold training codes' mean/std (not clipped: they cannot leave the range of the
training targets and row counts). The statistics per category are stored in the feature's
``target`` parameters (:func:`fit_target_encoding`).

numpy and the standard library only: the prediction server runs this.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from modelyard.core.errors import ConfigError
from modelyard.projects.tabular.feature_values import Block
from modelyard.projects.tabular.scaling import stats as mean_std
from modelyard.projects.tabular.schema import Features

#: Seed of the permutation that deals training rows into target-encoding folds.
FOLD_SEED: Final = 0

Keys = Sequence[str | None]
"""Category keys of one feature, one per row (``None``: missing)."""

Stats = dict[str, tuple[float, int]]
"""Category -> (sum of the target over its training rows, number of those rows)."""


@dataclass(frozen=True)
class Level:
    """One target-encoded feature: its name, parent feature (or ``None``) and smoothing."""

    name: str
    parent: str | None
    smoothing: float


@dataclass(frozen=True)
class Encoded:
    """Per row: the shrunk estimate and the number of training rows of the row's category."""

    estimate: NDArray[np.float64]
    count: NDArray[np.float64]


def category_stats(keys: Keys, target: NDArray[np.float64]) -> Stats:
    """Sum and count of ``target`` per category; missing keys are not counted."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for key, value in zip(keys, target.tolist(), strict=True):
        if key is None:
            continue
        sums[key] = sums.get(key, 0.0) + value
        counts[key] = counts.get(key, 0) + 1
    return {key: (sums[key], counts[key]) for key in sums}


def encode(
    levels: Sequence[Level],
    keys: Mapping[str, Keys],
    stats: Mapping[str, Stats],
    prior: float,
) -> dict[str, Encoded]:
    """Estimates of every level, parents first (``levels`` lists a parent before its children).

    Elementwise over rows, so a row's encoding does not depend on the rows it travels with.
    """
    out: dict[str, Encoded] = {}
    for level in levels:
        rows = keys[level.name]
        table = stats[level.name]
        found = [table.get(key, (0.0, 0)) if key is not None else (0.0, 0) for key in rows]
        sums = np.array([pair[0] for pair in found], dtype=np.float64)
        counts = np.array([pair[1] for pair in found], dtype=np.float64)
        base = out[level.parent].estimate if level.parent else np.full(len(rows), prior)
        estimate = (sums + level.smoothing * base) / (counts + level.smoothing)
        out[level.name] = Encoded(estimate=estimate, count=counts)
    return out


def encode_out_of_fold(
    levels: Sequence[Level],
    keys: Mapping[str, Keys],
    target: NDArray[np.float64],
    folds: int,
    seed: int,
) -> dict[str, Encoded]:
    """Training rows' encodings, each fold's rows from the statistics of the other folds.

    The prior of each fold is the mean target of the other folds. With fewer rows than folds,
    every row is its own fold (leave-one-out).
    """
    n_rows = target.size
    order = np.random.default_rng(seed).permutation(n_rows)
    groups = [group for group in np.array_split(order, min(folds, n_rows)) if group.size]
    estimate = {level.name: np.empty(n_rows, dtype=np.float64) for level in levels}
    count = {level.name: np.empty(n_rows, dtype=np.float64) for level in levels}
    for group in groups:
        rest = np.ones(n_rows, dtype=np.bool_)
        rest[group] = False
        rest_rows = np.flatnonzero(rest).tolist()
        prior = float(np.mean(target[rest_rows])) if rest_rows else 0.0
        stats = {
            level.name: category_stats([keys[level.name][i] for i in rest_rows], target[rest_rows])
            for level in levels
        }
        fold_keys = {level.name: [keys[level.name][i] for i in group.tolist()] for level in levels}
        for name, encoded in encode(levels, fold_keys, stats, prior).items():
            estimate[name][group] = encoded.estimate
            count[name][group] = encoded.count
    return {name: Encoded(estimate=estimate[name], count=count[name]) for name in estimate}


# ------------------------------------------------------------------------ in the feature pipeline


def levels_of(specs: Sequence[Mapping[str, Any]]) -> list[Level]:
    """The target-encoded categorical features, parents first (schema order guarantees it)."""
    return [
        Level(spec["name"], spec["target"]["parent"], spec["target"]["smoothing"])
        for spec in specs
        if "target" in spec["encodings"]
    ]


def fit_target_encoding(
    features: Features,
    specs: list[dict[str, Any]],
    keys: Mapping[str, Keys],
    target: NDArray[np.float64] | None,
) -> dict[str, Encoded]:
    """Add target-encoding parameters to ``specs``; return the training rows' out-of-fold codes.

    ``target`` is the training target in model space (logged when the target is). The estimates
    and counts are standardised with the statistics of the out-of-fold training codes: those are
    what the model is trained on.
    """
    options = {f.name: f for f in features.categorical}
    encoded_specs = [spec for spec in specs if "target" in spec["encodings"]]
    if not encoded_specs:
        return {}
    if target is None:
        raise ConfigError("target-encoded features need the training target to fit")
    for spec in encoded_specs:
        option = options[spec["name"]]
        spec["target"] = {"parent": option.parent, "smoothing": float(option.smoothing)}
    out_of_fold = encode_out_of_fold(
        levels_of(specs), keys, target, features.target_folds, FOLD_SEED
    )
    prior = float(np.mean(target))
    for spec in encoded_specs:
        codes = out_of_fold[spec["name"]]
        mean, std = mean_std(codes.estimate)
        count_mean, count_std = mean_std(np.log1p(codes.count))
        totals = category_stats(keys[spec["name"]], target)
        spec["target"].update(
            prior=prior,
            mean=mean,
            std=std,
            count_mean=count_mean,
            count_std=count_std,
            stats={key: [total, count] for key, (total, count) in sorted(totals.items())},
        )
    return out_of_fold


def encode_categorical(
    specs: Sequence[Mapping[str, Any]], keys: Mapping[str, Keys]
) -> dict[str, Encoded]:
    """Codes of rows that are not training rows, from the stored statistics of all of them."""
    encoded = [spec for spec in specs if "target" in spec]
    stats = {spec["name"]: spec["target"]["stats"] for spec in encoded}
    prior = encoded[0]["target"]["prior"] if encoded else 0.0
    return encode(levels_of(specs), keys, stats, prior)


def target_block(spec: Mapping[str, Any], codes: Encoded) -> Block:
    """The standardised estimate and log count. Not clipped: a code is a weighted mean of
    training targets and a count at most the training rows, so both stay within training's."""
    target = spec["target"]
    count = np.log1p(codes.count)
    return [
        (codes.estimate - target["mean"]) / target["std"],
        (count - target["count_mean"]) / target["count_std"],
    ]


def target_names(spec: Mapping[str, Any]) -> list[str]:
    return [f"{spec['name']}__target", f"{spec['name']}__target_count"]
