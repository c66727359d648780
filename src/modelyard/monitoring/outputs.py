"""Writing one check's files: Evidently's own report (HTML and JSON) and our ``verdict.json``."""

import json
from pathlib import Path
from typing import Any

from modelyard.monitoring.check import CheckResult

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
VERDICT_JSON = "verdict.json"


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def verdict_text(verdict: dict[str, Any]) -> str:
    return json.dumps(verdict, indent=2, allow_nan=False) + "\n"


def write_outputs(result: CheckResult, directory: Path, html: str | None = None) -> dict[str, Path]:
    """Write the three files into ``directory`` (created); their paths by name. ``html``: the
    report already rendered (rendering is the costly part)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in (REPORT_HTML, REPORT_JSON, VERDICT_JSON)}
    snapshot = result.findings.snapshot
    _replace(paths[REPORT_HTML], html or snapshot.get_html_str(as_iframe=False))
    _replace(paths[REPORT_JSON], snapshot.json())
    _replace(paths[VERDICT_JSON], verdict_text(result.verdict))
    return paths
