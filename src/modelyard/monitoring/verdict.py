"""``verdict.json``: the monitor's own compact judgement of one window, and its exit code.

Evidently's report (report.json/report.html) holds every statistic; the verdict holds what a CI
job, a cron script, the webhook and the service's ``/drift`` act on: which columns drifted, the
share, dataset drift yes/no, the window, realised accuracy against the promoted values, and the
thresholds that produced the judgement. Its fields are described in docs/monitoring.md.
"""

from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelyard.core.bundle import Bundle
from modelyard.monitoring.frames import CurrentData
from modelyard.monitoring.window import MAX_WINDOW_ROWS, Window

if TYPE_CHECKING:
    from modelyard.monitoring.drift_report import DriftFindings

VERDICT_FORMAT = 1
#: Exit codes of ``modelyard monitor``: nothing wrong / drift or accuracy below promoted /
#: usage or data error (the CLI's user-error code).
EXIT_OK, EXIT_ALERT, EXIT_USAGE = 0, 1, 2


def build_verdict(
    *,
    bundle: Bundle,
    log: str,
    window: Window,
    current: CurrentData,
    findings: "DriftFindings",
    accuracy: dict[str, Any],
    now: datetime,
    feedback_table: bool,
) -> dict[str, Any]:
    manifest = bundle.manifest
    reasons = []
    if findings.detected and findings.share >= findings.drift_share:
        reasons.append(
            f"dataset drift: {len(findings.drifted)} of {len(findings.columns)} columns drifted "
            f"(share {findings.share:.2f} >= {findings.drift_share})"
        )
    elif findings.detected:
        strong = findings.strongly_drifted
        reasons.append(
            f"dataset drift: {', '.join(strong)} drifted with a p-value below "
            f"{findings.single_column_p_value:.2g} (0.05 over {len(findings.tested_inputs)} "
            f"tested inputs), {len(findings.drifted)} of {len(findings.columns)} columns drifted "
            f"(share {findings.share:.2f} < {findings.drift_share})"
        )
    for name in accuracy["below_promoted"]:
        metric = accuracy["metrics"][name]
        reasons.append(
            f"realised {name} {metric['realised']:.4g} is worse than the expected "
            f"{metric['promoted']:.4g} (from the {accuracy['expected_from']}) by more than "
            f"{accuracy['tolerance']:.0%}"
        )
    return {
        "format": VERDICT_FORMAT,
        "generated_at": now.isoformat(),
        "model": {
            "name": manifest.name,
            "version": manifest.version,
            "family": manifest.task,
            "bundle": str(bundle.path),
        },
        "window": {
            **window.to_json(),
            "log": log,
            "predictions": current.predictions,
            "drift_rows": current.rows,
            "unreadable_predictions": current.unreadable,
            "first_at": None if current.first_at is None else current.first_at.isoformat(),
            "last_at": None if current.last_at is None else current.last_at.isoformat(),
            "capped": current.predictions >= window.limit and window.last is None,
            "versions": sorted(current.versions),
        },
        "drift": {
            "detected": findings.detected,
            "share": findings.share,
            "drifted_columns": findings.drifted,
            "strongly_drifted_columns": findings.strongly_drifted,
            "single_column_p_value": findings.single_column_p_value,
            "columns": {name: column.to_json() for name, column in findings.columns.items()},
        },
        "quality": findings.quality_json(),
        "realised_accuracy": {"feedback_table": feedback_table, **accuracy},
        "thresholds": {
            "drift_share": findings.drift_share,
            "single_column_p_value": findings.single_column_p_value,
            "accuracy_tolerance": accuracy["tolerance"],
            "min_feedback": accuracy["min_feedback"],
            "max_window_rows": MAX_WINDOW_ROWS,
        },
        "alert": bool(reasons),
        "reasons": reasons,
        "exit_code": EXIT_ALERT if reasons else EXIT_OK,
    }
