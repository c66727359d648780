"""The monitoring service's Prometheus metrics, named in :mod:`.metric_names` (the one list that
the alert rules and the dashboard read too), set from each new verdict."""

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from modelyard.monitoring import metric_names as names


class MonitorMetrics:
    """The gauges of the latest verdict and the failure counter; one instance per service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # a scrape never sees the gauges half-replaced by an update
        self._lock = threading.Lock()

        def gauge(name: str, text: str, *labels: str) -> Gauge:
            return Gauge(name, text, ["model", *labels], registry=self.registry)

        self.detected = gauge(names.DRIFT_DETECTED, "Dataset drift in the latest report (1/0).")
        self.share = gauge(names.DRIFT_SHARE, "Share of columns drifted in the latest report.")
        self.feature_detected = gauge(
            names.FEATURE_DRIFT_DETECTED, "Column drifted in the latest report (1/0).", "feature"
        )
        self.feature_score = gauge(
            names.FEATURE_DRIFT_SCORE, "The column's drift statistic.", "feature", "test"
        )
        self.realised = gauge(
            names.REALISED_METRIC, "Family metric on predictions with ground truth.", "metric"
        )
        self.promoted = gauge(
            names.PROMOTED_METRIC, "The metric's value the bundle was promoted with.", "metric"
        )
        self.below = gauge(
            names.REALISED_BELOW_PROMOTED, "Realised worse than promoted (1/0).", "metric"
        )
        self.window_rows = gauge(names.WINDOW_ROWS, "Logged predictions in the latest window.")
        self.feedback_rows = gauge(names.FEEDBACK_ROWS, "Window predictions with ground truth.")
        self.last_report = gauge(names.LAST_REPORT, "Unix time of the latest completed report.")
        self.failures = Counter(
            names.REPORT_FAILURES,
            "Reports that failed, by reason.",
            ["model", "reason"],
            registry=self.registry,
        )

    def update(self, verdict: dict[str, Any], finished_at: float) -> None:
        """Replace every gauge with the values of ``verdict`` (a column gone is dropped)."""
        with self._lock:
            self._update(verdict, finished_at)

    def _update(self, verdict: dict[str, Any], finished_at: float) -> None:
        model = verdict["model"]["name"]
        for labelled in (
            self.feature_detected,
            self.feature_score,
            self.realised,
            self.promoted,
            self.below,
        ):
            labelled.clear()
        drift = verdict["drift"]
        self.detected.labels(model).set(int(drift["detected"]))
        self.share.labels(model).set(drift["share"])
        for feature, column in drift["columns"].items():
            self.feature_detected.labels(model, feature).set(int(column["drifted"]))
            self.feature_score.labels(model, feature, column["method"]).set(column["score"])
        accuracy = verdict["realised_accuracy"]
        for metric, entry in accuracy["metrics"].items():
            self.realised.labels(model, metric).set(entry["realised"])
            if entry["promoted"] is not None:
                self.promoted.labels(model, metric).set(entry["promoted"])
                self.below.labels(model, metric).set(int(entry["below_promoted"]))
        self.window_rows.labels(model).set(verdict["window"]["predictions"])
        self.feedback_rows.labels(model).set(accuracy["pairs"])
        self.last_report.labels(model).set(finished_at)

    def failed(self, model: str, reason: str) -> None:
        self.failures.labels(model, reason).inc()

    def exposition(self) -> bytes:
        with self._lock:
            return generate_latest(self.registry)
