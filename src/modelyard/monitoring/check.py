"""One monitoring check: the bundle's reference profile against a window of the prediction log,
with realised accuracy from the feedback table; returns the verdict and Evidently's report.

Used by ``modelyard monitor`` (once) and by the monitoring service (on a schedule). Raises
:class:`~modelyard.core.errors.DataError` for a window it cannot judge (no log, no predictions).
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from modelyard.core.bundle import Bundle
from modelyard.core.errors import DataError
from modelyard.core.families import drift_rows_function
from modelyard.monitoring.accuracy import (
    DEFAULT_MIN_FEEDBACK,
    FamilyAccuracy,
    expected_values,
    realised_block,
)
from modelyard.monitoring.feedback import has_feedback, read_truths
from modelyard.monitoring.frames import CurrentData, DriftRows, collect, frame, reference_frame
from modelyard.monitoring.reference import reference_profile
from modelyard.monitoring.verdict import build_verdict
from modelyard.monitoring.window import (
    EmptyWindowError,
    Window,
    open_log,
    parse_since,
    public_url,
    read_window,
    unreadable,
    window_conditions,
    window_is_empty,
)
from modelyard.serving.log_schema import predictions

if TYPE_CHECKING:
    from modelyard.monitoring.drift_report import DriftFindings

#: Verdict thresholds' defaults (the CLI's and the service's).
DEFAULT_DRIFT_SHARE = 0.5
DEFAULT_ACCURACY_TOLERANCE = 0.05


@dataclass(frozen=True)
class MonitorSettings:
    """What to check; ``since`` is kept as given ("24h") so that each scheduled check moves on."""

    bundle: Bundle
    log_url: str
    since: str | None = None
    last: int | None = None
    drift_share: float = DEFAULT_DRIFT_SHARE
    accuracy_tolerance: float = DEFAULT_ACCURACY_TOLERANCE
    min_feedback: int = DEFAULT_MIN_FEEDBACK
    #: The family's ``log_rows`` unless given (tests hand in their own adapter).
    drift_rows: DriftRows | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.drift_share <= 1.0:
            raise DataError(f"--drift-share must be in (0, 1], not {self.drift_share}")
        if self.accuracy_tolerance < 0.0:
            raise DataError(f"--accuracy-tolerance must be >= 0, not {self.accuracy_tolerance}")
        if self.min_feedback < 1:
            raise DataError(f"--min-feedback must be >= 1, not {self.min_feedback}")

    def window(self, now: datetime) -> Window:
        since = None if self.since is None else parse_since(self.since, now)
        return Window(since=since, last=self.last)


@dataclass
class CheckResult:
    verdict: dict[str, Any]
    findings: "DriftFindings"

    @property
    def alert(self) -> bool:
        return bool(self.verdict["alert"])


def run_check(settings: MonitorSettings, now: datetime | None = None) -> CheckResult:
    """Read the window, run the report, join the feedback, judge."""
    now = now or datetime.now(UTC)
    bundle, window = settings.bundle, settings.window(now)
    profile = reference_profile(bundle)
    model = bundle.manifest.name
    engine = open_log(settings.log_url)
    try:
        with engine.connect() as connection:
            if window_is_empty(connection, model, window):
                raise EmptyWindowError(
                    f"no answered predictions of model {model!r} among {window.describe()} "
                    f"in the prediction log {public_url(settings.log_url)}: nothing to monitor"
                )
            log_rows = settings.drift_rows or drift_rows_function(bundle.manifest.task)
            current = collect(read_window(connection, model, window), log_rows, profile)
            _check_rows(current, model, window, settings.log_url)
            truths = []
            feedback_table = has_feedback(connection)
            if feedback_table:
                conditions = [
                    *window_conditions(connection, model, window),
                    predictions.c.id >= current.first_id,
                    predictions.c.id <= current.last_id,
                ]
                truths = list(read_truths(connection, conditions))
    except SQLAlchemyError as exc:  # the database went away, or is not a prediction log
        raise unreadable(settings.log_url, exc) from exc
    finally:
        engine.dispose()
    # Evidently (seconds to import) only now: bad input and empty windows answer at once
    from modelyard.monitoring.drift_report import run_report

    findings = run_report(
        profile, reference_frame(profile), frame(profile, current.columns), settings.drift_share
    )
    family = FamilyAccuracy.of(bundle.manifest.task)
    accuracy = realised_block(
        truths,
        family,
        bundle.manifest,
        expected_values(family, bundle.manifest, profile),
        settings.accuracy_tolerance,
        settings.min_feedback,
    )
    verdict = build_verdict(
        bundle=bundle,
        log=public_url(settings.log_url),
        window=window,
        current=current,
        findings=findings,
        accuracy=accuracy,
        now=now,
        feedback_table=feedback_table,
    )
    return CheckResult(verdict, findings)


def _check_rows(current: CurrentData, model: str, window: Window, url: str) -> None:
    if current.rows == 0:
        raise EmptyWindowError(
            f"the {current.predictions} predictions of model {model!r} among {window.describe()} "
            f"in the prediction log {public_url(url)} gave no drift rows "
            f"({current.unreadable} unreadable): were they logged by this model's family?"
        )
