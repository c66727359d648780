"""The Evidently 0.7 report: data drift per column, the dataset's drift share, and data quality.

Drift: Evidently's ``DataDriftPreset`` runs each column's test, chosen by
:mod:`.drift_tests` from its type (the profile's ``kind``) and the sizes of both samples (K-S or
chi-square p-values when either has at most 1,000 rows, Wasserstein or Jensen-Shannon distances
above; categories compared in buckets); a column drifts when its test fails, and the dataset
drifts when the share of drifted columns reaches ``drift_share`` or when one input column's
p-value is below 0.05 shared among the tested input columns (Bonferroni,
:func:`.drift_tests.single_column_p_value`).
Quality: ``DataSummaryPreset`` (missing values, statistics), values outside the reference's range
per numerical column and values outside the reference's categories per categorical one.

A column with no value in the window (rows logged before the feature existed) or none in the
reference cannot be tested, nor can a categorical one whose values fall in one bucket at this
window size: it is reported as untested, not as drifted.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import OutListValueCount, OutRangeValueCount
from evidently.presets import DataDriftPreset, DataSummaryPreset

from modelyard.core.reference_profile import ReferenceProfile
from modelyard.monitoring.drift_tests import (
    P_VALUE_TESTS,
    can_test,
    methods,
    single_column_p_value,
)
from modelyard.monitoring.window import EmptyWindowError

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"
_MISSING = "evidently:metric_v2:MissingValueCount"
_OUT_OF_RANGE = "evidently:metric_v2:OutRangeValueCount"
_OUT_OF_LIST = "evidently:metric_v2:OutListValueCount"


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
    def tested_inputs(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.group == "input"]

    @property
    def single_column_p_value(self) -> float:
        return single_column_p_value(len(self.tested_inputs))

    @property
    def strongly_drifted(self) -> list[str]:
        """Input columns whose p-value alone makes dataset drift (see :mod:`.drift_tests`)."""
        bound = self.single_column_p_value
        return [
            name
            for name in self.tested_inputs
            if self.columns[name].method in P_VALUE_TESTS and self.columns[name].score < bound
        ]

    @property
    def detected(self) -> bool:
        """The share of drifted columns reaches ``drift_share``, or one column drifted beyond
        the Bonferroni bound."""
        return bool(self.columns) and (
            self.share >= self.drift_share or bool(self.strongly_drifted)
        )

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


def run_report(
    profile: ReferenceProfile, reference: pd.DataFrame, current: pd.DataFrame, drift_share: float
) -> DriftFindings:
    """Run the report on the columns that have values on both sides; read its results back."""
    present = [
        n for n in profile.columns if current[n].notna().any() and reference[n].notna().any()
    ]
    if not present:
        raise EmptyWindowError(
            f"none of the profile's columns ({', '.join(profile.columns)}) has a value in the "
            "window: were these predictions logged by a server older than the bundle?"
        )
    names = [
        n
        for n in present
        if profile.columns[n].kind != "categorical" or can_test(reference[n], current[n])
    ]
    if not names:
        raise EmptyWindowError(
            f"the window's {len(current)} rows are too few to test any of the profile's columns "
            f"({', '.join(present)}) for drift: widen the window"
        )
    untested = [n for n in profile.columns if n not in names]
    definition = _definition(profile, present)
    quality, new_categories = _quality_metrics(profile, reference, current, present)
    tests, thresholds = methods(
        {n: profile.columns[n].kind for n in names}, len(reference), len(current)
    )
    drift = DataDriftPreset(
        columns=names,
        drift_share=drift_share,
        per_column_method=tests,
        per_column_threshold=thresholds,
    )
    report = Report(
        [drift, DataSummaryPreset(), *quality],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
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
