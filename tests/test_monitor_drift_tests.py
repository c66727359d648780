"""The drift test each column gets at each window size (monitoring/drift_tests.py), on a real
Evidently report: a small window from the reference's own distribution raises no drift, even
against a 5,000-row reference with an ID-like column of thousands of categories; a shifted one
does, and names its columns."""

import numpy as np
import pandas as pd

from modelyard.core.reference_profile import Column, ReferenceProfile
from modelyard.monitoring.drift_report import run_report
from modelyard.monitoring.drift_tests import buckets, can_test, methods
from modelyard.monitoring.frames import frame, reference_frame

REFERENCE_ROWS = 5000


def sample(rng: np.random.Generator, rows: int, area_scale: float = 1.0) -> dict[str, list]:
    """Sales-like rows: two numbers, a region of 6 categories, a building of ~3,000."""
    return {
        "area_m2": list(rng.normal(80.0, 25.0, rows) * area_scale),
        "year": list(rng.integers(1900, 2020, rows).astype(float)),
        "region": [str(v) for v in rng.choice(6, rows, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])],
        "building": [f"b{v}" for v in rng.integers(0, 3000, rows)],
    }


def profile() -> ReferenceProfile:
    columns = {
        "area_m2": Column("numerical", "input"),
        "year": Column("numerical", "input"),
        "region": Column("categorical", "input"),
        "building": Column("categorical", "input"),
    }
    return ReferenceProfile(
        family="tabular",
        drawn="synthetic",
        seed=0,
        columns=columns,
        data=sample(np.random.default_rng(0), REFERENCE_ROWS),
        metrics={},
    )


def test_small_windows_from_the_reference_distribution_do_not_drift() -> None:
    reference = profile()
    alarms = 0
    for seed in range(1, 11):
        current = frame(reference, sample(np.random.default_rng(seed), 60))
        findings = run_report(reference, reference_frame(reference), current, 0.5)
        alarms += findings.detected
        # 60 rows cannot test ~3,000 buildings of 1/3000 each: untested, not drifted
        assert "building" in findings.untested
        assert set(findings.columns) == {"area_m2", "year", "region"}
    assert alarms <= 1


def test_a_shifted_window_drifts_and_names_its_columns() -> None:
    reference = profile()
    current = frame(reference, sample(np.random.default_rng(1), 60, area_scale=1.5))
    findings = run_report(reference, reference_frame(reference), current, 0.3)
    assert findings.detected
    assert "area_m2" in findings.drifted
    assert findings.columns["area_m2"].method == "ks"


def wide_profile(columns: int = 10) -> ReferenceProfile:
    """``columns`` independent numerical inputs, like a family's 7-11 drift features, and a
    prediction."""
    rng = np.random.default_rng(0)
    names = [f"x{i}" for i in range(columns)]
    return ReferenceProfile(
        family="tabular",
        drawn="synthetic",
        seed=0,
        columns={n: Column("numerical", "input") for n in names}
        | {"predicted": Column("numerical", "prediction")},
        data={n: list(rng.normal(100.0, 25.0, REFERENCE_ROWS)) for n in [*names, "predicted"]},
        metrics={},
    )


def wide_window(seed: int, rows: int, scale: float = 1.0, column: str = "x0") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"x{i}": rng.normal(100.0, 25.0, rows) for i in range(10)}
    data["predicted"] = rng.normal(100.0, 25.0, rows)
    data[column] = data[column] * scale
    return pd.DataFrame(data)


def test_one_input_shifted_alone_is_dataset_drift_by_its_p_value() -> None:
    """Areas x1.5 move one of ten columns: a share of 0.1, far under 0.5, but a p-value far
    under 0.05/10; windows from the reference's distribution stay quiet."""
    reference = wide_profile()
    findings = run_report(reference, reference_frame(reference), wide_window(1, 100, 1.5), 0.5)
    assert findings.share < 0.5 and findings.detected
    assert findings.strongly_drifted == ["x0"]
    assert findings.single_column_p_value == 0.005  # 0.05 over the 10 inputs
    # a prediction that moves alone is no input shift: the share rule alone judges it
    answers = run_report(
        reference, reference_frame(reference), wide_window(1, 100, 1.5, "predicted"), 0.5
    )
    assert "predicted" in answers.drifted
    assert answers.strongly_drifted == [] and not answers.detected
    quiet = [
        run_report(reference, reference_frame(reference), wide_window(seed, 100), 0.5)
        for seed in range(2, 8)
    ]
    # at most 5 % of such windows by Bonferroni (3 % of 400 seeds of this set-up by scipy's
    # K-S; seed 5 is one of them)
    assert sum(f.detected for f in quiet) <= 1


def test_large_windows_use_distances_and_bucket_rare_categories() -> None:
    reference = profile()
    current = frame(reference, sample(np.random.default_rng(2), 3000))
    findings = run_report(reference, reference_frame(reference), current, 0.5)
    assert not findings.detected, findings.drifted
    assert "building" not in findings.drifted
    assert "Wasserstein" in findings.columns["area_m2"].method


def test_buckets_keep_categories_expected_often_enough() -> None:
    reference = pd.Series(["a"] * 900 + ["b"] * 90 + ["c"] * 10)
    current = pd.Series(["a"] * 40 + ["b"] * 5 + ["z"] * 5)
    ref, cur = buckets(reference, current)
    # at 50 rows "a" is expected 45 times (own bucket), "b" 4.5 and "c" 0.5 (the rest bucket)
    assert ref.tolist() == [900, 100] and cur.tolist() == [40, 10]
    assert can_test(reference, current)
    assert not can_test(pd.Series(["x", "y"] * 10), pd.Series(["x"] * 5))
    chosen, thresholds = methods({"n": "numerical", "c": "categorical"}, 5000, 60)
    assert chosen["n"] == "ks" and thresholds == {"n": 0.05, "c": 0.05}
    chosen, thresholds = methods({"n": "numerical", "c": "categorical"}, 5000, 3000)
    assert "n" not in chosen and thresholds == {"c": 0.1}
