"""The Evidently 0.7 report: data drift per column, the dataset's drift share, and data quality.

Drift: each column's test follows from its type (the profile's ``kind``) and the sample sizes.
A window of up to :data:`SMALL_WINDOW` rows is tested with K-S (numerical) or chi-square
(categorical), drifted at p < 0.05: Evidently's own choice for a reference above 1,000 rows, a
distance (Wasserstein, Jensen-Shannon) drifted at 0.1, measures sampling noise in a small window
(half the columns of held-out AVM sales drifted in every 50-row window; benchmarks/drift.py).
Larger windows keep Evidently's choice. Categories too rare in the reference to be expected
:data:`MIN_EXPECTED` times in the window (and categories the reference lacks) are pooled into
one, on both sides, for the drift test only: a street seen once among 5,000 sales says nothing
about a 50-row window. A column drifts when its test fails, and the dataset drifts when the
share of drifted columns reaches ``drift_share``.
Quality: ``DataSummaryPreset`` (missing values, statistics), values outside the reference's range
per numerical column and values outside the reference's categories per categorical one.

A column with no value in the window (rows logged before the feature existed) or none in the
reference cannot be tested: it is reported as untested, not as drifted.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import OutListValueCount, OutRangeValueCount
from evidently.presets import DataDriftPreset, DataSummaryPreset

from modelyard.core.reference_profile import ReferenceProfile
from modelyard.monitoring.window import EmptyWindowError

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"
_MISSING = "evidently:metric_v2:MissingValueCount"
_OUT_OF_RANGE = "evidently:metric_v2:OutRangeValueCount"
_OUT_OF_LIST = "evidently:metric_v2:OutListValueCount"
#: Largest window tested with p-values (K-S, chi-square) rather than Evidently's distances.
SMALL_WINDOW = 1000
#: Fewest expected occurrences in the window for a category to be tested on its own.
MIN_EXPECTED = 5
#: The category rare (and unseen) categories are pooled into for the drift test.
POOLED = "(rare or new)"


@dataclass(frozen=True)
class ColumnDrift:
    kind: str
    group: str
    method: str
    threshold: float
    score: float
    drifted: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftFindings:
    """What the verdict needs from a report; the report itself stays in ``snapshot``."""

    snapshot: Snapshot
    drift_share: float
    share: float = 0.0
    columns: dict[str, ColumnDrift] = field(default_factory=dict)
    untested: list[str] = field(default_factory=list)
    missing: dict[str, float] = field(default_factory=dict)
    out_of_reference: dict[str, dict[str, float]] = field(default_factory=dict)
    new_categories: dict[str, list[str]] = field(default_factory=dict)

    @property
    def drifted(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.drifted]

    @property
    def detected(self) -> bool:
        return bool(self.columns) and self.share >= self.drift_share

    def quality_json(self) -> dict[str, Any]:
        return {
            "missing_share": self.missing,
            "out_of_reference": self.out_of_reference,
            "new_categories": self.new_categories,
            "untested_columns": self.untested,
        }


def _definition(profile: ReferenceProfile, names: list[str]) -> DataDefinition:
    kinds = {name: profile.columns[name].kind for name in names}
    return DataDefinition(
        numerical_columns=[n for n, k in kinds.items() if k == "numerical"],
        categorical_columns=[n for n, k in kinds.items() if k == "categorical"],
    )


def _quality_metrics(
    profile: ReferenceProfile, reference: pd.DataFrame, current: pd.DataFrame, names: list[str]
) -> tuple[list[Any], dict[str, list[str]]]:
    metrics: list[Any] = []
    new: dict[str, list[str]] = {}
    for name in names:
        if profile.columns[name].kind == "numerical":
            low, high = float(reference[name].min()), float(reference[name].max())
            metrics.append(OutRangeValueCount(column=name, left=low, right=high))
        else:
            known = sorted(str(v) for v in reference[name].dropna().unique())
            metrics.append(OutListValueCount(column=name, values=known))
            unseen = sorted(set(current[name].dropna().unique()) - set(known))
            if unseen:
                new[name] = [str(v) for v in unseen[:20]]
    return metrics, new


def pooled_categories(
    profile: ReferenceProfile, reference: pd.DataFrame, current: pd.DataFrame, names: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copies with each categorical column's rare and new categories pooled into
    :data:`POOLED`: those the reference holds less often than :data:`MIN_EXPECTED` in
    ``len(current)`` rows, and those it lacks (when it has rare ones to pool them with)."""
    reference, current = reference.copy(), current.copy()
    least = MIN_EXPECTED / max(len(current), 1)
    for name in names:
        if profile.columns[name].kind != "categorical":
            continue
        shares = reference[name].value_counts(normalize=True)
        kept = set(shares.index[shares >= least])
        if len(kept) == len(shares):
            continue
        for frame in (reference, current):
            values = frame[name]
            frame[name] = values.where(values.isna() | values.isin(kept), POOLED)
    return reference, current


def run_report(
    profile: ReferenceProfile, reference: pd.DataFrame, current: pd.DataFrame, drift_share: float
) -> DriftFindings:
    """Run the report on the columns that have values on both sides; read its results back."""
    names = [n for n in profile.columns if current[n].notna().any() and reference[n].notna().any()]
    untested = [n for n in profile.columns if n not in names]
    if not names:
        raise EmptyWindowError(
            f"none of the profile's columns ({', '.join(profile.columns)}) has a value in the "
            "window: were these predictions logged by a server older than the bundle?"
        )
    definition = _definition(profile, names)
    quality, new_categories = _quality_metrics(profile, reference, current, names)
    small = len(current) <= SMALL_WINDOW
    drift = DataDriftPreset(
        columns=names,
        drift_share=drift_share,
        num_method="ks" if small else None,
        cat_method="chisquare" if small else None,
    )
    report = Report([drift, DataSummaryPreset(), *quality], include_tests=True)
    pooled_reference, pooled_current = pooled_categories(profile, reference, current, names)
    snapshot = report.run(
        Dataset.from_pandas(pooled_current, data_definition=definition),
        Dataset.from_pandas(pooled_reference, data_definition=definition),
    )
    findings = DriftFindings(snapshot=snapshot, drift_share=drift_share, untested=untested)
    findings.new_categories = new_categories
    _read_back(snapshot.dict(), profile, findings)
    return findings


def _read_back(raw: dict[str, Any], profile: ReferenceProfile, findings: DriftFindings) -> None:
    """Fill ``findings`` from the snapshot's JSON (metric configs name the columns)."""
    drifted = {
        test["metric_config"]["params"]["column"]: test["status"] == "FAIL"
        for test in raw.get("tests", [])
        if test["metric_config"]["params"].get("type") == _VALUE_DRIFT
    }
    for metric in raw["metrics"]:
        config, value = metric["config"], metric["value"]
        kind, column = config.get("type"), config.get("column")
        if kind == _DRIFTED_COUNT:
            findings.share = float(value["share"])
        elif kind == _VALUE_DRIFT and column in drifted:
            spec = profile.columns[column]
            findings.columns[column] = ColumnDrift(
                kind=spec.kind,
                group=spec.group,
                method=str(config["method"]),
                threshold=float(config["threshold"]),
                score=float(value),
                drifted=drifted[column],
            )
        elif kind == _MISSING and column is not None:
            findings.missing[column] = float(value["share"])
        elif kind in (_OUT_OF_RANGE, _OUT_OF_LIST) and column is not None:
            findings.out_of_reference[column] = {
                "count": float(value["count"]),
                "share": float(value["share"]),
            }
