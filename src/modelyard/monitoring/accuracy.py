"""Realised accuracy: the family's own metrics on logged predictions that have ground truth,
over the whole window and per time bucket, next to the values the bundle was promoted with.

The value a metric is judged against (:func:`expected_values`, the verdict's ``promoted``) is the
accuracy to expect on the reference's distribution: the evaluation's where its test split is the
training population (tabular, images), the reference profile's ``expected_metrics`` where it is
another one (NILM: another house); the verdict names the source and shows both.

A metric is "below promoted" when it is worse than the promoted value by more than
``tolerance`` x |promoted| (direction-aware, the rule the quantisation gate uses:
:meth:`modelyard.core.bundle.MetricChange.between`) **beyond its sampling noise**: even the
optimistic end of a one-sided bootstrap interval (:func:`optimistic_bounds`: the pairs
resampled :data:`BOOTSTRAP_ROUNDS` times) is that much worse. Without it, 40 truths of a model
as good as promoted (accuracy 0.68 against 0.74: two images) or an F1 over three kettle uses
alerted on healthy windows. The interval's level is 1 - :data:`ALERT_RATE` / m for the m metrics
judged in the window (Bonferroni): a NILM window judges eight (two per appliance), and at 95 %
each, healthy windows of a few hundred requests alerted on one MAE or another
(``benchmarks/drift.py``).
"""

import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelyard.core.bundle import Manifest, MetricChange
from modelyard.core.families import realised_accuracy_function
from modelyard.core.reference_profile import ReferenceProfile
from modelyard.monitoring.feedback import Truth

#: Predictions with truth needed before realised accuracy is judged against the promoted value
#: (fewer are reported, not judged: a handful of truths is noise, not a regression).
DEFAULT_MIN_FEEDBACK = 30
#: Bootstrap resamples of the pairs, and the most pairs one resample draws from (a random
#: subset beyond: a wider, i.e. more cautious, interval for a fraction of the cost).
BOOTSTRAP_ROUNDS = 400
BOOTSTRAP_MAX_PAIRS = 5_000
#: The most a healthy window may alert on realised accuracy, over all the metrics it judges.
ALERT_RATE = 0.05
_BUCKETS = (
    ("hour", timedelta(hours=1), timedelta(days=2)),
    ("day", timedelta(days=1), timedelta(days=90)),
    ("week", timedelta(weeks=1), timedelta.max),
)


@dataclass(frozen=True)
class FamilyAccuracy:
    """A family's ``realised_accuracy`` module: the metric, evaluation's values, the direction."""

    realised: Callable[..., dict[str, float]]
    promoted: Callable[[Mapping[str, Any]], dict[str, float]]
    higher_is_better: Callable[[str], bool]
    #: Whether a window's scores hold enough evidence to judge a metric (a family without the
    #: function judges every metric from ``--min-feedback`` pairs on).
    judgeable: Callable[[str, Mapping[str, float]], bool] = lambda _metric, _scores: True

    @classmethod
    def of(cls, task: str) -> "FamilyAccuracy":
        realised = realised_accuracy_function(task)
        module = sys.modules[realised.__module__]
        judgeable = getattr(module, "judgeable", None)
        if judgeable is None:
            return cls(realised, module.promoted, module.higher_is_better)
        return cls(realised, module.promoted, module.higher_is_better, judgeable)


def bucket_size(first: datetime, last: datetime) -> tuple[str, timedelta]:
    """Hours for a window up to two days, days up to 90 days, weeks beyond."""
    span = last - first
    for name, size, longest in _BUCKETS:
        if span <= longest:
            return name, size
    return _BUCKETS[-1][0], _BUCKETS[-1][1]


def _bucket_start(when: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((when - epoch) // size) * size


@dataclass(frozen=True)
class Expected:
    """What realised accuracy is judged against (``values``), where they come from, and the
    evaluation's values of the same metrics (shown beside them)."""

    values: dict[str, float]
    evaluation: dict[str, float]
    #: ``reference``: the profile's ``expected_metrics``; ``evaluation``: the evaluation's.
    source: str
    drawn: str

    def to_json(self) -> dict[str, Any]:
        return {"expected_from": self.source, "expected_drawn": self.drawn}


#: What the evaluation's metrics were measured on, for the verdict.
EVALUATION_DRAWN = "the bundle's evaluation (its test split), as promoted"


def expected_values(
    family: FamilyAccuracy, manifest: Manifest, profile: ReferenceProfile
) -> Expected:
    """The reference profile's ``expected_metrics`` where it has them (the evaluation measured
    another population: NILM), else the evaluation's metrics (the profile's copy, else the
    manifest's). Never a mix: a metric the chosen source lacks is reported, not judged."""
    evaluation = family.promoted(profile.metrics) or family.promoted(manifest.metrics)
    expected = family.promoted(profile.expected_metrics)
    if expected:
        return Expected(expected, evaluation, "reference", profile.expected_drawn)
    return Expected(evaluation, evaluation, "evaluation", EVALUATION_DRAWN)


def realised_block(
    truths: Sequence[Truth],
    family: FamilyAccuracy,
    manifest: Manifest,
    expected: Expected,
    tolerance: float,
    min_feedback: int = DEFAULT_MIN_FEEDBACK,
) -> dict[str, Any]:
    """The verdict's ``realised_accuracy``: overall metrics against the expected values (the
    verdict's ``promoted``), and over time."""
    promoted = expected.values
    pairs = [(t.outputs, t.truth) for t in truths]
    overall = family.realised(pairs, manifest) if pairs else {}
    metrics: dict[str, dict[str, Any]] = {}
    below: list[str] = []
    judged = len(pairs) >= min_feedback
    to_judge = [
        name for name in overall if judged and name in promoted and family.judgeable(name, overall)
    ]
    alpha = ALERT_RATE / max(1, len(to_judge))
    bounds = optimistic_bounds(pairs, family, manifest, alpha) if to_judge else {}
    for name, value in sorted(overall.items()):
        entry: dict[str, Any] = {
            "realised": value,
            "promoted": promoted.get(name),
            "evaluation": expected.evaluation.get(name),
            "higher_is_better": family.higher_is_better(name),
            "below_promoted": False,
        }
        entry["judged"] = name in to_judge
        if entry["judged"]:
            better = entry["higher_is_better"]
            change = MetricChange.between(promoted[name], value, better, tolerance)
            entry["relative_change"] = change.relative_change
            bound = bounds.get(name, value)
            entry["optimistic_bound"] = bound
            entry["below_promoted"] = not (
                change.within_tolerance
                or MetricChange.between(promoted[name], bound, better, tolerance).within_tolerance
            )
            if entry["below_promoted"]:
                below.append(name)
        metrics[name] = entry
    return {
        **expected.to_json(),
        "pairs": len(pairs),
        "tolerance": tolerance,
        "min_feedback": min_feedback,
        "judged": judged,
        "alert_rate": ALERT_RATE,
        "metrics": metrics,
        "below_promoted": below,
        "over_time": _over_time(truths, family, manifest),
    }


def optimistic_bounds(
    pairs: Sequence[tuple[Any, Any]],
    family: FamilyAccuracy,
    manifest: Manifest,
    alpha: float = ALERT_RATE,
) -> dict[str, float]:
    """Per metric, the optimistic end of a one-sided ``1 - alpha`` percentile-bootstrap
    interval: the ``1 - alpha`` quantile of a metric where higher is better, the ``alpha`` one
    where lower is (seeded: one window always gives one verdict)."""
    rng = random.Random(0)
    pool = list(pairs)
    if len(pool) > BOOTSTRAP_MAX_PAIRS:
        pool = rng.sample(pool, BOOTSTRAP_MAX_PAIRS)
    draws: dict[str, list[float]] = {}
    for _ in range(BOOTSTRAP_ROUNDS):
        resample = rng.choices(pool, k=len(pool))
        for name, value in family.realised(resample, manifest).items():
            draws.setdefault(name, []).append(value)
    bounds = {}
    for name, values in draws.items():
        values.sort()
        at = 1 - alpha if family.higher_is_better(name) else alpha
        bounds[name] = values[min(len(values) - 1, int(at * len(values)))]
    return bounds


def _over_time(
    truths: Sequence[Truth], family: FamilyAccuracy, manifest: Manifest
) -> dict[str, Any]:
    if not truths:
        return {"bucket": None, "buckets": []}
    times = [t.created_at for t in truths]
    name, size = bucket_size(min(times), max(times))
    grouped: dict[datetime, list[tuple[Any, Any]]] = {}
    for truth in truths:
        grouped.setdefault(_bucket_start(truth.created_at, size), []).append(
            (truth.outputs, truth.truth)
        )
    return {
        "bucket": name,
        "buckets": [
            {
                "start": start.isoformat(),
                "pairs": len(pairs),
                "metrics": family.realised(pairs, manifest),
            }
            for start, pairs in sorted(grouped.items())
        ],
    }
