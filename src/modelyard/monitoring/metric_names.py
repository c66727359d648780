"""The Prometheus metrics the monitor exports: one list, read by the monitor's ``/metrics``, the
alert rules' tests and the dashboard check (deploy/monitoring/).

Every gauge is labelled with the served model's ``model`` name; the unit noun ends each name
(``ratio``, ``rows``, ``seconds``) or the value is a 0/1 flag (``detected``, ``below``).
"""

#: 1 when the latest report found dataset drift, else 0.
DRIFT_DETECTED = "modelyard_drift_detected"
#: Share of the profile's columns that drifted in the latest report (0..1).
DRIFT_SHARE = "modelyard_drift_share_ratio"
#: 1 when a column drifted in the latest report, else 0; labels ``model``, ``feature``.
FEATURE_DRIFT_DETECTED = "modelyard_feature_drift_detected"
#: The drift test's statistic for a column (p-value or distance, as the test reports it);
#: labels ``model``, ``feature``, ``test``.
FEATURE_DRIFT_SCORE = "modelyard_feature_drift_score"
#: Realised value of a family metric on predictions with ground truth; labels ``model``, ``metric``.
REALISED_METRIC = "modelyard_realised_metric"
#: The value the bundle was evaluated/promoted with, for the same metric; labels ``model``,
#: ``metric``.
PROMOTED_METRIC = "modelyard_promoted_metric"
#: 1 when the realised metric is worse than the promoted value by more than the configured
#: tolerance (direction-aware: lower is better for errors), else 0; labels ``model``, ``metric``.
REALISED_BELOW_PROMOTED = "modelyard_realised_metric_below_promoted"
#: Logged predictions in the latest report's window.
WINDOW_ROWS = "modelyard_monitor_window_rows"
#: Predictions in the window that have ground truth (feedback).
FEEDBACK_ROWS = "modelyard_monitor_feedback_rows"
#: Unix time of the latest completed report.
LAST_REPORT = "modelyard_monitor_last_report_timestamp_seconds"
#: Reports that failed (a database down, an empty window); label ``reason``.
REPORT_FAILURES = "modelyard_monitor_report_failures_total"

ALL = (
    DRIFT_DETECTED,
    DRIFT_SHARE,
    FEATURE_DRIFT_DETECTED,
    FEATURE_DRIFT_SCORE,
    REALISED_METRIC,
    PROMOTED_METRIC,
    REALISED_BELOW_PROMOTED,
    WINDOW_ROWS,
    FEEDBACK_ROWS,
    LAST_REPORT,
    REPORT_FAILURES,
)
