"""The promotion record: what ``modelyard promote`` leaves on a model version, and how a server
reads it back into ``/info``'s ``registry`` block.

Promotion tags the version ``promotion.<alias>`` (when the alias moved) and
``last_gate_check.<alias>`` (every attempt) with one JSON record: when, the previous holder,
promoted or not, forced or not, each gate's verdict (``gates``: name -> passed) and, since issue
17, each gate's summary and numbers (``gate_results``), so a server can show the gates a version
passed with their values without the promotion's evidence directory.
"""

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelyard.serving.registry_info import GateOutcome, RegistryBlock

if TYPE_CHECKING:  # the server's command line reads records without MLflow's client loaded
    from modelyard.registry.store import RegisteredVersion

PROMOTION_TAG = "promotion.{alias}"
GATE_CHECK_TAG = "last_gate_check.{alias}"


@dataclass(frozen=True)
class Promotion:
    at: str
    alias: str
    previous: str | None
    promoted: bool
    forced: bool
    gates: list[GateOutcome]

    def record(self) -> str:
        """The tag value (JSON)."""
        return json.dumps(
            {
                "at": self.at,
                "alias": self.alias,
                "previous": self.previous,
                "promoted": self.promoted,
                "forced": self.forced,
                "gates": {g.name: g.passed for g in self.gates},
                "gate_results": [g.model_dump(mode="json") for g in self.gates],
            }
        )


def registry_block(version: "RegisteredVersion", alias: str | None) -> RegistryBlock:
    """``/info``'s block for ``version`` served through ``alias`` (None: by version number), with
    the gates of the promotion that moved the alias there, when one did."""
    record = _record(version.tags.get(PROMOTION_TAG.format(alias=alias))) if alias else {}
    return RegistryBlock(
        name=version.name,
        version=version.version,
        alias=alias,
        bundle_version=version.tags.get("bundle_version"),
        promoted_at=_text(record.get("at")),
        forced=record.get("forced") if isinstance(record.get("forced"), bool) else None,
        gates=_gates(record),
    )


def _record(tag: str | None) -> dict[str, Any]:
    """The tag's record; {} for none or one that is not a JSON object (set by hand)."""
    if not tag:
        return {}
    try:
        loaded = json.loads(tag)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _gates(record: dict[str, Any]) -> list[GateOutcome]:
    """The gate outcomes with their numbers, or (records older than them) the verdicts only."""
    results = record.get("gate_results")
    if isinstance(results, list):
        outcomes = []
        for result in results:
            try:
                outcomes.append(GateOutcome.model_validate(result))
            except ValueError:
                continue
        return outcomes
    verdicts = record.get("gates")
    if isinstance(verdicts, dict):
        return [
            GateOutcome(name=str(name), passed=passed)
            for name, passed in verdicts.items()
            if isinstance(passed, bool)
        ]
    return []


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
