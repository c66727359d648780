"""``modelyard monitor``: judge the served model's recent predictions against its bundle.

One check (:func:`run`) writes Evidently's report (``report.html``, ``report.json``) and our
``verdict.json`` and says how the command exits: 0 nothing wrong, 1 drift or realised accuracy
below the promoted value (a CI job or cron can act on it), 2 a usage or data error (raised as a
ModelyardError, which the CLI turns into one line). On an alert the webhook, if given, is called.
:func:`serve` runs the same check on a schedule behind a small HTTP app (``--serve``).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.core.bundle import Bundle, load_bundle
from modelyard.core.errors import DataError
from modelyard.core.runs import default_workdir, timestamp_name
from modelyard.monitoring.check import MonitorSettings, run_check
from modelyard.monitoring.outputs import VERDICT_JSON, write_outputs
from modelyard.monitoring.webhook import WebhookOutcome, send_alert
from modelyard.monitoring.window import parse_duration
from modelyard.registry.resolve import bundle_path

#: Shortest schedule of ``--serve`` (a check reads the log and runs a report).
MIN_EVERY_S = 10.0


@dataclass(frozen=True)
class MonitorOutcome:
    verdict: dict[str, Any]
    paths: dict[str, Path]
    webhook: WebhookOutcome | None

    @property
    def verdict_path(self) -> Path:
        return self.paths[VERDICT_JSON]

    @property
    def exit_code(self) -> int:
        return int(self.verdict["exit_code"])


def open_bundle(reference: str, registry_uri: str | None = None) -> Bundle:
    """The bundle at a path or ``models:/NAME@ALIAS`` (downloaded and verified)."""
    return load_bundle(bundle_path(reference, registry_uri))


def default_output(bundle: Bundle) -> Path:
    return default_workdir() / "monitoring" / bundle.manifest.name / timestamp_name()


def run(
    settings: MonitorSettings, output: Path | None = None, webhook: str | None = None
) -> MonitorOutcome:
    """One check: files written, webhook called on an alert."""
    result = run_check(settings)
    paths = write_outputs(result, output or default_output(settings.bundle))
    outcome = send_alert(webhook, result.verdict) if webhook and result.alert else None
    return MonitorOutcome(result.verdict, paths, outcome)


def parse_every(text: str) -> float:
    seconds = parse_duration(text)
    if seconds is None or seconds < MIN_EVERY_S:
        raise DataError(
            f"--every {text!r}: give a duration of at least {MIN_EVERY_S:.0f}s, e.g. 10m"
        )
    return seconds


def serve(
    settings: MonitorSettings,
    host: str,
    port: int,
    every: str,
    output: Path | None = None,
    webhook: str | None = None,
) -> None:
    """Run the monitoring service until interrupted (see :mod:`modelyard.monitoring.service`)."""
    import uvicorn

    from modelyard.monitoring.service import MonitorService, build_app

    service = MonitorService(settings, parse_every(every), output, webhook)
    uvicorn.run(build_app(service), host=host, port=port, log_level="warning")
