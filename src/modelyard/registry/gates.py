"""Promotion gates: each one a pass/fail verdict with the numbers behind it.

* metrics: the candidate's gate metrics (see ``Task.gate_metrics``), evaluated on the same data
  as the current holder of the alias, are not worse than the holder's beyond a tolerance;
* latency: the p95 latency of single requests (the bundle's example request,
  :meth:`~modelyard.serving.adapter.ServingAdapter.example_request`) to the candidate, served
  over real HTTP on 127.0.0.1 by ``modelyard serve``, is under a threshold.
"""

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from modelyard.core.bundle import Bundle
from modelyard.projects.base import GateMetric
from modelyard.serving.adapter import bundle_example
from modelyard.serving.server_process import running_server

WARMUP_REQUESTS = 5


@dataclass
class GateResult:
    name: str
    passed: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def compare_metrics(
    candidate: dict[str, GateMetric],
    holder: dict[str, GateMetric] | None,
    tolerance: float,
) -> GateResult:
    """Pass when no candidate metric is worse than the holder's by more than ``tolerance``.

    ``tolerance`` is relative (0.02 = 2 % of the holder's value). Without a holder the gate
    passes: there is nothing to be worse than.
    """
    if holder is None:
        return GateResult("metrics", True, "no current holder: nothing to compare with")
    rows: dict[str, Any] = {}
    worse: list[str] = []
    for name, theirs in holder.items():
        mine = candidate.get(name)
        if mine is None:
            worse.append(name)
            rows[name] = {"holder": theirs.value, "candidate": None}
            continue
        slack = abs(theirs.value) * tolerance
        if theirs.higher_is_better:
            ok = mine.value >= theirs.value - slack
        else:
            ok = mine.value <= theirs.value + slack
        rows[name] = {
            "holder": theirs.value,
            "candidate": mine.value,
            "higher_is_better": theirs.higher_is_better,
            "passed": ok,
        }
        if not ok:
            worse.append(name)
    if worse:
        return GateResult("metrics", False, f"worse than the holder on {', '.join(worse)}", rows)
    return GateResult("metrics", True, f"not worse on any of {len(rows)} metric(s)", rows)


def measure_latency(bundle: Bundle, request: dict[str, Any], requests: int) -> list[float]:
    """Milliseconds per single ``POST /predict`` to a real server running the bundle."""
    timings: list[float] = []
    with running_server(bundle.path) as url, httpx.Client(base_url=url, timeout=30.0) as client:
        for index in range(WARMUP_REQUESTS + requests):
            started = time.perf_counter()
            response = client.post("/predict", **request)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(
                    f"the candidate answered HTTP {response.status_code}: {response.text[:300]}"
                )
            if index >= WARMUP_REQUESTS:
                timings.append(elapsed)
    return timings


def latency_gate(bundle: Bundle, requests: int, max_p95_ms: float) -> GateResult:
    try:
        request = bundle_example(bundle).httpx_arguments()
        timings = measure_latency(bundle, request, requests)
    except Exception as exc:  # a server that cannot start or answer fails the gate
        return GateResult("latency", False, f"could not be measured: {exc}")
    p50, p95 = (float(np.percentile(timings, q)) for q in (50, 95))
    passed = p95 <= max_p95_ms
    verdict = "within" if passed else "above"
    return GateResult(
        "latency",
        passed,
        f"p95 {p95:.1f} ms over {len(timings)} requests, {verdict} the {max_p95_ms:g} ms limit",
        {
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "requests": len(timings),
            "max_p95_ms": max_p95_ms,
        },
    )
