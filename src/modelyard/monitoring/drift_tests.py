"""Which drift test each column gets: Evidently's own size rule, applied to the smaller sample.

Evidently picks statistical tests (K-S, chi-square: p-values) for a reference of at most 1,000
rows and distances (Wasserstein, Jensen-Shannon) above, judging by the reference alone. Our
reference holds up to 5,000 rows while a monitoring window is often a few hundred requests, and
a distance's noise grows as the *smaller* sample shrinks: a few dozen held-out rows from the
training distribution cross the 0.1 threshold in normed Wasserstein distance, and far more so in
Jensen-Shannon distance on a column of thousands of categories, so every small window "drifted"
(benchmarks/drift.py found dataset drift in every 50-row window of held-out sales).
Here the rule looks at both sizes: statistical tests when either sample has at most
:data:`SMALL_SAMPLE` rows, Evidently's distances otherwise.

Dataset drift (:mod:`.drift_report`) is the share of drifted columns reaching ``--drift-share``,
or one input column whose p-value is below :func:`single_column_p_value` (Bonferroni over the
tested input columns): a shift of one input drifts 2-5 of 7-11 columns, under a share of 0.5,
and a lower share raises false alarms (benchmarks/drift.py, docs/benchmarks.md).

A categorical column is compared on buckets: each category expected at least :data:`MIN_BUCKET`
times in the smaller sample (from its share of the reference) keeps its own bucket, the rest
(rare ones and categories the reference never saw) share one. Without it a column such as the
building of a sale, where nearly every value is new to the reference, drifts in every window;
with it a window that moves towards other categories, or unseen ones, still drifts. A column left
with one bucket cannot be tested at that window size (:func:`can_test` says so): a 60-row window
cannot tell drift among 400 zip codes of a few percent each, a 500-row one can.
"""

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
from evidently.legacy.core import ColumnType
from scipy.stats import chisquare

#: Evidently's boundary between statistical tests and distances, applied to the smaller sample.
SMALL_SAMPLE = 1000
#: Fewest expected or observed values for a category to be its own bucket (the usual condition
#: for the chi-square approximation).
MIN_BUCKET = 5
#: Thresholds: p-value below which a test says drift; distance above which it does.
P_VALUE = 0.05
DISTANCE = 0.1
_OTHER = object()


def buckets(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bucket (reference, current) of a categorical column (see the module text)."""
    reference, current = reference.dropna(), current.dropna()
    ref_counts, cur_counts = reference.value_counts(), current.value_counts()
    expected = ref_counts / max(len(reference), 1) * min(len(reference), len(current))
    own = sorted(str(c) for c, n in expected.items() if n >= MIN_BUCKET)
    ref_own = np.array([ref_counts.get(c, 0) for c in own], dtype=np.float64)
    cur_own = np.array([cur_counts.get(c, 0) for c in own], dtype=np.float64)
    return (
        np.append(ref_own, len(reference) - ref_own.sum()),
        np.append(cur_own, len(current) - cur_own.sum()),
    )


def can_test(reference: pd.Series, current: pd.Series) -> bool:
    """Whether a categorical column has at least two buckets with values at this window size."""
    ref, cur = buckets(reference, current)
    return int(np.count_nonzero((ref + cur) > 0)) >= 2


def _bucketed_chisquare(
    reference: pd.Series, current: pd.Series, feature_type: ColumnType, threshold: float
) -> tuple[float, bool]:
    del feature_type
    ref, cur = buckets(reference, current)
    used = (ref + cur) > 0
    # expected counts from the reference's shares, with one pseudo-count so that a bucket the
    # reference never filled (new categories) gives a large finite statistic, not infinity
    expected = (ref[used] + 1.0) / (ref[used].sum() + used.sum()) * cur[used].sum()
    p_value = float(chisquare(cur[used], expected)[1])
    return p_value, p_value < threshold


def _bucketed_jensenshannon(
    reference: pd.Series, current: pd.Series, feature_type: ColumnType, threshold: float
) -> tuple[float, bool]:
    del feature_type
    ref, cur = buckets(reference, current)
    p, q = ref / ref.sum(), cur / cur.sum()
    middle = (p + q) / 2

    def divergence(a: np.ndarray) -> float:
        used = a > 0
        return float(np.sum(a[used] * np.log(a[used] / middle[used])))

    # the distance as scipy.spatial.distance.jensenshannon gives it (natural log)
    score = float(np.sqrt(max(0.0, (divergence(p) + divergence(q)) / 2)))
    return score, score >= threshold


BUCKETED_CHISQUARE = StatTest(
    name="bucketed_chisquare",
    display_name="chi-square p_value (rare categories in one bucket)",
    allowed_feature_types=[ColumnType.Categorical],
    default_threshold=P_VALUE,
)
BUCKETED_JENSENSHANNON = StatTest(
    name="bucketed_jensenshannon",
    display_name="Jensen-Shannon distance (rare categories in one bucket)",
    allowed_feature_types=[ColumnType.Categorical],
    default_threshold=DISTANCE,
)
register_stattest(BUCKETED_CHISQUARE, default_impl=_bucketed_chisquare)
register_stattest(BUCKETED_JENSENSHANNON, default_impl=_bucketed_jensenshannon)


#: The tests whose score is a p-value (a column drifts below its threshold), as the verdict
#: names them; the others' scores are distances.
P_VALUE_TESTS = frozenset({"ks", BUCKETED_CHISQUARE.name})


def single_column_p_value(tested_inputs: int) -> float:
    """The p-value below which one input column alone makes dataset drift: :data:`P_VALUE`
    shared among the ``tested_inputs`` (Bonferroni). Under no drift the chance that *any* input
    falls below it is at most 5 %, however the columns depend on each other, so it adds at most
    that to the share rule's false alarms; a shift of one input (areas x1.5, a meter reading
    30 % high) gives that input a p-value far smaller, long before enough columns drift for the
    share. Inputs only: predictions and embeddings follow the inputs, and the model's answers
    can move while no input does (AVM's held-out sales, a later period, move its predicted
    prices to p = 3e-5 over 500 requests: an alarm in every window under a rule over all
    columns, in none over inputs; benchmarks/drift.py). Only p-value tests (windows of at most
    :data:`SMALL_SAMPLE` rows) take part: a distance has no such bound."""
    return P_VALUE / max(tested_inputs, 1)


def methods(
    kinds: dict[str, str], reference_rows: int, current_rows: int
) -> tuple[dict[str, str | StatTest], dict[str, float]]:
    """The drift test and threshold of each column (``kinds``: name -> numerical/categorical)
    for samples of these sizes."""
    small = min(reference_rows, current_rows) <= SMALL_SAMPLE
    chosen: dict[str, str | StatTest] = {}
    thresholds: dict[str, float] = {}
    for name, kind in kinds.items():
        if kind == "categorical":
            chosen[name] = BUCKETED_CHISQUARE if small else BUCKETED_JENSENSHANNON
            thresholds[name] = P_VALUE if small else DISTANCE
        elif small:
            chosen[name], thresholds[name] = "ks", P_VALUE
        # a large numerical sample keeps Evidently's choice (Wasserstein distance, 0.1)
    return chosen, thresholds
