"""The drift test on small windows: no false alarms from sampling noise, real shifts found.

Found on real data (benchmarks/drift.py): against a 5,000-row reference, Evidently's own choice
(Wasserstein and Jensen-Shannon distances, drifted at 0.1) called dataset drift in every 50-row
window of held-out AVM sales, and a street seen once among 5,000 sales made every window's
street column drift. Real Evidently reports, no stand-ins.
"""

from typing import Any

import numpy as np

from modelyard.core.reference_profile import Column, ReferenceProfile
from modelyard.monitoring.drift_report import run_report
from modelyard.monitoring.frames import frame, reference_frame

ROWS = 5000


def _sample(rng: np.random.Generator, rows: int, area_scale: float = 1.0) -> dict[str, list[Any]]:
    return {
        "area_m2": list(np.round(rng.lognormal(4.3, 0.35, rows) * area_scale, 1)),
        "year": list(rng.integers(1900, 2020, rows).astype(float)),
        "zip_code": [f"{z}" for z in rng.integers(1000, 1040, rows)],
        # thousands of streets, most seen once
        "street": [f"street {s}" for s in rng.integers(0, 4000, rows)],
    }


def _profile() -> ReferenceProfile:
    columns = {
        "area_m2": Column("numerical", "input"),
        "year": Column("numerical", "input"),
        "zip_code": Column("categorical", "input"),
        "street": Column("categorical", "input"),
    }
    data = _sample(np.random.default_rng(0), ROWS)
    return ReferenceProfile(
        family="tabular", drawn="synthetic", seed=0, columns=columns, data=data, metrics={}
    )


def test_small_windows_from_the_reference_distribution_do_not_drift() -> None:
    profile = _profile()
    reference = reference_frame(profile)
    rng = np.random.default_rng(1)
    for _ in range(4):
        current = frame(profile, _sample(rng, 50))
        findings = run_report(profile, reference, current, drift_share=0.5)
        assert not findings.detected, findings.drifted
        assert "street" not in findings.drifted


def test_a_real_shift_is_found_in_a_small_window() -> None:
    profile = _profile()
    current = frame(profile, _sample(np.random.default_rng(2), 50, area_scale=1.5))
    findings = run_report(profile, reference_frame(profile), current, drift_share=0.25)
    assert findings.drifted == ["area_m2"]
    assert findings.columns["area_m2"].method == "ks"
    assert findings.detected
