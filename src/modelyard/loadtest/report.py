"""Locust's CSV statistics as a typed summary, and the ``summary.json`` written beside them."""

import ast
import csv
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelyard.core.errors import ModelyardError

AGGREGATED = "Aggregated"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class EndpointStats:
    """One row of ``<prefix>_stats.csv``: an endpoint, or all of them (``name == "Aggregated"``).

    Latencies are in milliseconds; ``None`` when no request was timed.
    """

    method: str
    name: str
    requests: int
    failures: int
    requests_per_s: float
    failures_per_s: float
    average_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @property
    def label(self) -> str:
        return f"{self.method} {self.name}".strip()

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class FailureStats:
    """One row of ``<prefix>_failures.csv``: an error message and how often it happened."""

    method: str
    name: str
    error: str
    occurrences: int


@dataclass(frozen=True)
class LoadTestSummary:
    url: str
    project: str
    users: int
    spawn_rate: float
    duration_s: int
    total: EndpointStats
    endpoints: tuple[EndpointStats, ...]
    failures: tuple[FailureStats, ...]
    locust_exit_code: int
    output_dir: Path
    report_html: Path
    stats_csv: Path
    log: Path

    @property
    def summary_json(self) -> Path:
        return self.output_dir / SUMMARY_FILE

    @property
    def passed(self) -> bool:
        """Requests were made and none failed."""
        return self.total.requests > 0 and self.total.failures == 0

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        for key in ("output_dir", "report_html", "stats_csv", "log"):
            payload[key] = str(payload[key])
        return payload

    def describe(self) -> list[str]:
        """Plain-text lines for a terminal: totals, each endpoint, top failures, the files."""
        total = self.total
        lines = [
            f"{self.project} at {self.url}: {self.users} user(s) for {self.duration_s} s",
            f"{total.requests} request(s) ({total.requests_per_s:.1f}/s), {total.failures} "
            f"failed; latency p50 {_ms(total.p50_ms)}, p95 {_ms(total.p95_ms)}, "
            f"p99 {_ms(total.p99_ms)}",
        ]
        lines += [
            f"  {e.label}: {e.requests} ({e.failures} failed), p50 {_ms(e.p50_ms)}, "
            f"p95 {_ms(e.p95_ms)}, p99 {_ms(e.p99_ms)}"
            for e in self.endpoints
        ]
        lines += [f"  {f.occurrences}x {f.method} {f.name}: {f.error}" for f in self.failures[:5]]
        lines += [f"report: {self.report_html}", f"summary: {self.summary_json}"]
        return lines

    def write(self) -> Path:
        self.summary_json.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return self.summary_json


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def read_stats(path: Path) -> tuple[EndpointStats, tuple[EndpointStats, ...]]:
    """The aggregated row and the per-endpoint rows of a Locust ``_stats.csv`` file."""
    rows = _read_csv(path)
    endpoints = tuple(_endpoint(row, path) for row in rows if row.get("Name") != AGGREGATED)
    totals = [_endpoint(row, path) for row in rows if row.get("Name") == AGGREGATED]
    if not totals:
        raise ModelyardError(f"{path} has no {AGGREGATED!r} row; is it a Locust stats file?")
    return totals[0], endpoints


def read_failures(path: Path) -> tuple[FailureStats, ...]:
    """The rows of a Locust ``_failures.csv`` file, most frequent first (none if it is absent)."""
    if not path.is_file():
        return ()
    failures = [
        FailureStats(
            method=row.get("Method", ""),
            name=row.get("Name", ""),
            error=plain_error(row.get("Error", "")),
            occurrences=_int(row, "Occurrences", path),
        )
        for row in _read_csv(path)
    ]
    return tuple(sorted(failures, key=lambda f: -f.occurrences))


def plain_error(text: str) -> str:
    """A failure message without Locust's wrapper: ``CatchResponseError('HTTP 503: ...')``."""
    match = re.fullmatch(r"CatchResponseError\((.*)\)", text, re.DOTALL)
    if match:
        try:
            message = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            return text
        if isinstance(message, str):
            return message
    return text


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise ModelyardError(f"cannot read Locust statistics {path}: {exc}") from exc


def _endpoint(row: dict[str, str], path: Path) -> EndpointStats:
    return EndpointStats(
        method=row.get("Type", ""),
        name=row.get("Name", ""),
        requests=_int(row, "Request Count", path),
        failures=_int(row, "Failure Count", path),
        requests_per_s=_float(row, "Requests/s", path) or 0.0,
        failures_per_s=_float(row, "Failures/s", path) or 0.0,
        average_ms=_float(row, "Average Response Time", path),
        p50_ms=_float(row, "50%", path),
        p95_ms=_float(row, "95%", path),
        p99_ms=_float(row, "99%", path),
        max_ms=_float(row, "Max Response Time", path),
    )


def _float(row: dict[str, str], column: str, path: Path) -> float | None:
    """A number, or ``None`` for Locust's ``N/A`` (nothing measured)."""
    if column not in row:
        raise ModelyardError(f"{path} has no {column!r} column; is it a Locust stats file?")
    text = (row[column] or "").strip()
    if text in {"", "N/A"}:
        return None
    try:
        return float(text)
    except ValueError:
        raise ModelyardError(f"{path}: {column} is {text!r}, not a number") from None


def _int(row: dict[str, str], column: str, path: Path) -> int:
    value = _float(row, column, path)
    return 0 if value is None else int(value)
