"""``modelyard promote``: move an alias to a model version only through the gates.

Both the candidate and the current holder of the alias are evaluated here, now, on the same
data (the project's configured test data, or ``source``), so the comparison never mixes numbers
computed on different data. Every attempt leaves its evidence (metrics of both, latency, the
verdicts) in ``<workdir>/promotions/`` and its verdict as a tag on the model version; a forced
promotion is recorded as forced. The tag holds each gate's summary and numbers too
(:mod:`modelyard.registry.promotion_record`): ``/info`` of a server of the alias shows them.
"""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelyard.core.bundle import Bundle
from modelyard.core.config import load_config
from modelyard.core.errors import ModelyardError
from modelyard.core.families import load_task
from modelyard.projects.base import GateMetric, Task
from modelyard.registry.gates import GateResult, compare_metrics, latency_gate
from modelyard.registry.promotion_record import GATE_CHECK_TAG, PROMOTION_TAG, Promotion
from modelyard.registry.references import ModelReference
from modelyard.registry.store import open_registry
from modelyard.serving.registry_info import GateOutcome
from modelyard.stages import evaluate


@dataclass
class PromotionReport:
    name: str
    version: str
    alias: str
    previous: str | None
    gates: list[GateResult]
    forced: bool
    promoted: bool
    evidence: Path

    @property
    def gates_passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"gates_passed": self.gates_passed, "evidence": str(self.evidence)}


def _gate_metrics(
    cfg: DictConfig, task: Task, bundle: Bundle, source: Path | None, output: Path
) -> dict[str, GateMetric]:
    metrics, _ = evaluate.run(cfg, model=bundle.path, source=source, output=output)
    return task.gate_metrics(metrics)


def promote(
    name: str,
    version: str,
    alias: str,
    overrides: Sequence[str] = (),
    force: bool = False,
    source: Path | None = None,
) -> PromotionReport:
    """Run the gates for ``name`` version ``version`` -> ``alias``; move the alias if they pass
    (or if ``force``). Returns the report either way."""
    base = load_config(list(overrides))
    registry = open_registry(base)
    candidate = registry.fetch(ModelReference(name, version=version))
    chosen = [o for o in overrides if o.startswith("project=")]
    project = [] if chosen else [f"project={candidate.manifest.project}"]
    cfg = load_config([*project, *overrides])
    if str(cfg.project.name) != candidate.manifest.project:
        raise ModelyardError(
            f"{name} version {version} is a {candidate.manifest.project} model, "
            f"but the configuration is for project {cfg.project.name}"
        )
    task = load_task(cfg)
    gates_cfg = cfg.registry.gates
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    evidence = Path(cfg.paths.workdir) / "promotions" / name / f"{stamp}-v{version}-to-{alias}"

    holder = registry.alias_holder(name, alias)
    previous = holder.version if holder is not None else None
    mine = _gate_metrics(cfg, task, candidate, source, evidence / "candidate" / "metrics.json")
    theirs = None
    if holder is not None and holder.version != version:
        held = registry.fetch(holder.reference)
        theirs = _gate_metrics(cfg, task, held, source, evidence / "holder" / "metrics.json")
    gates = [
        compare_metrics(mine, theirs, float(gates_cfg.metric_tolerance)),
        latency_gate(
            candidate, int(gates_cfg.latency_requests), float(gates_cfg.max_p95_latency_ms)
        ),
    ]
    report = PromotionReport(
        name=name,
        version=version,
        alias=alias,
        previous=previous,
        gates=gates,
        forced=force and not all(g.passed for g in gates),
        promoted=False,
        evidence=evidence,
    )
    report.promoted = report.gates_passed or force
    record = Promotion(
        at=stamp,
        alias=alias,
        previous=previous,
        promoted=report.promoted,
        forced=report.forced,
        gates=[
            GateOutcome(name=g.name, passed=g.passed, summary=g.summary, values=g.details)
            for g in gates
        ],
    ).record()
    if report.promoted:
        registry.set_alias(name, alias, version)
        registry.tag_version(name, version, PROMOTION_TAG.format(alias=alias), record)
    registry.tag_version(name, version, GATE_CHECK_TAG.format(alias=alias), record)
    evidence.mkdir(parents=True, exist_ok=True)
    (evidence / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return report
