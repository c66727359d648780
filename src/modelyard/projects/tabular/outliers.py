"""Outlier rules: bounds fitted on the training rows, then training rows outside them dropped.

Bounds are plain JSON (saved with the run), optionally per group (e.g. per zip code, since a
normal price in central Copenhagen is an outlier in Jutland). Evaluation rows are never cleaned
by looking at their own target: the caller applies :func:`drop_outliers` to training rows only.
"""

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.tabular.frame_columns import as_text, numeric_column, require_column
from modelyard.projects.tabular.schema import OutlierRule


def fit_outlier_bounds(frame: pd.DataFrame, rules: Sequence[OutlierRule]) -> list[dict[str, Any]]:
    """Bounds per rule, JSON-serialisable, to be saved with the run and applied to training rows.

    Each entry is ``{"column", "method", "group_by", "global": [lo, hi], "groups": {key: [lo,
    hi]}}``; group keys are the group values as text (see :func:`.frame_columns.as_text`), and
    only groups with at least ``min_group_size`` values get their own bounds: a handful of sales
    says little about what is typical in a zip code.
    """
    return [_fit_rule(frame, rule) for rule in rules]


def _fit_rule(frame: pd.DataFrame, rule: OutlierRule) -> dict[str, Any]:
    what = f"outlier rule on {rule.column!r}"
    _check_rule(rule, what)
    values = numeric_column(require_column(frame, rule.column, what), what)
    if not np.isfinite(values.to_numpy()).any():
        raise DataError(f"{what}: the column has no values to fit bounds on")
    groups: dict[str, list[float]] = {}
    if rule.group_by is not None:
        keys = _group_keys(require_column(frame, rule.group_by, what))
        for key, group in values.groupby(keys, sort=True):
            if int(np.isfinite(group.to_numpy()).sum()) >= rule.min_group_size:
                groups[str(key)] = _bounds(group, rule)
    return {
        "column": rule.column,
        "method": rule.method,
        "group_by": rule.group_by,
        "global": _bounds(values, rule),
        "groups": groups,
    }


def _check_rule(rule: OutlierRule, what: str) -> None:
    if rule.method == "iqr" and rule.k < 0:
        raise ConfigError(f"{what}: k must not be negative, got {rule.k}")
    if rule.method == "quantile" and not 0 <= rule.lower < rule.upper <= 1:
        raise ConfigError(
            f"{what}: need 0 <= lower < upper <= 1, got lower={rule.lower}, upper={rule.upper}"
        )
    if rule.group_by is not None and rule.min_group_size < 1:
        raise ConfigError(f"{what}: min_group_size must be at least 1")


def _bounds(values: pd.Series, rule: OutlierRule) -> list[float]:
    """[lo, hi] from the finite values (linear-interpolated quantiles, as numpy and pandas do)."""
    array = values.to_numpy(dtype=float)
    finite = array[np.isfinite(array)]
    if rule.method == "iqr":
        q1, q3 = np.quantile(finite, [0.25, 0.75])
        spread = rule.k * (q3 - q1)
        return [float(q1 - spread), float(q3 + spread)]
    low, high = np.quantile(finite, [rule.lower, rule.upper])
    return [float(low), float(high)]


def _group_keys(column: pd.Series) -> pd.Series:
    """Group values as text (None when missing): JSON keys must be strings, and equal on reload."""
    return column.map(as_text).astype(object)


def drop_outliers(
    frame: pd.DataFrame, bounds: list[dict[str, Any]]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Drop rows outside each rule's bounds (inclusive), in order; report rows removed per rule.

    Rows whose group has no bounds of its own (small, unseen or missing group) use the global
    bounds; rows with a missing value in the rule's column are dropped, since an outlier rule is
    always on a column the model needs.
    """
    report: list[dict[str, Any]] = []
    for fitted in bounds:
        keep = _within_bounds(frame, fitted)
        report.append(
            {
                "column": fitted["column"],
                "group_by": fitted.get("group_by"),
                "rows_before": len(frame),
                "rows_removed": int((~keep).sum()),
            }
        )
        frame = frame.loc[keep]
    return frame.copy(), report


def _within_bounds(frame: pd.DataFrame, fitted: dict[str, Any]) -> pd.Series:
    try:
        column, group_by = str(fitted["column"]), fitted.get("group_by")
        global_low, global_high = (float(bound) for bound in fitted["global"])
        groups: dict[str, list[float]] = dict(fitted.get("groups") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed outlier bounds {fitted!r}: {exc}") from exc
    what = f"outlier bounds on {column!r}"
    values = numeric_column(require_column(frame, column, what), what)
    low = pd.Series(global_low, index=frame.index)
    high = pd.Series(global_high, index=frame.index)
    if group_by is not None and groups:
        keys = _group_keys(require_column(frame, str(group_by), what))
        low = _group_bound(keys, groups, 0).fillna(low)
        high = _group_bound(keys, groups, 1).fillna(high)
    return (values >= low) & (values <= high)


def _group_bound(keys: pd.Series, groups: dict[str, list[float]], side: int) -> pd.Series:
    """Each row's group bound (NaN where its group has none), by mapping keys to bounds."""
    lookup: dict[Hashable, float] = {key: float(pair[side]) for key, pair in groups.items()}
    return keys.map(lookup).astype(float)
