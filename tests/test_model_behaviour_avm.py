"""Behaviour of the trained AVM as users get it (the exported bundle behind a real server on
127.0.0.1, rows sent as JSON), in the spirit of Made-With-ML's behavioural tests: directional
expectations (area, building age), defined behaviour for an unseen zip code, invariance to the
order of rows in a batch.

The model is the session's quick run (``trained_pipelines.py``); the rows are real test sales.
"""

import csv
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard.serving.server_process import running_server
from trained_pipelines import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 200  # real test sales per request


class ServedAvm:
    """The quick AVM bundle behind a real server, and real test sales as request rows."""

    def __init__(self, url: str, pipeline: Pipeline) -> None:
        self.url = url
        self.pipeline = pipeline
        self.rows = sale_rows(pipeline, ROWS)

    def value(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = httpx.post(f"{self.url}/predict", json=rows, timeout=60)
        assert response.status_code == 200, response.text
        predictions: list[dict[str, Any]] = response.json()["predictions"]
        assert len(predictions) == len(rows)
        return predictions

    def changed(self, **change: Any) -> list[dict[str, Any]]:
        """The test rows with ``change`` applied: values, or functions of the row's value."""
        return [
            {**row, **{k: v(row[k]) if callable(v) else v for k, v in change.items()}}
            for row in self.rows
        ]


def sale_rows(pipeline: Pipeline, count: int) -> list[dict[str, Any]]:
    """The first ``count`` prepared test sales as request rows (numbers as JSON numbers, the rest
    as the prepared CSV's text) with an area, a construction year and a floor."""
    schema = pipeline.bundle.manifest.preprocessing["schema"]["features"]
    numeric = {f["name"] for f in schema["numeric"]}
    features = [f["name"] for kind in ("numeric", "categorical", "date") for f in schema[kind]]
    rows = []
    with (pipeline.prepared_dir / "test.csv").open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            if all(record[k] for k in numeric):
                rows.append(
                    {k: (float(record[k]) if k in numeric else record[k]) or None for k in features}
                )
            if len(rows) == count:
                return rows
    raise AssertionError(f"fewer than {count} complete test sales")


@pytest.fixture(scope="module")
def served(avm_pipeline: Pipeline) -> Iterator[ServedAvm]:
    with running_server(avm_pipeline.bundle.path) as url:
        yield ServedAvm(url, avm_pipeline)


def totals(predictions: list[dict[str, Any]]) -> np.ndarray:
    return np.array([p["total_price"] for p in predictions])


def per_m2(predictions: list[dict[str, Any]]) -> np.ndarray:
    return np.array([p["price_per_m2"] for p in predictions])


def test_a_larger_area_raises_the_total_price(served: ServedAvm) -> None:
    """The same flat with half as much area again is worth more in total, for every sale: the
    price per m2 falls with size, but far less than the area grows (measured on the quick model:
    the total rises by 12 % at least, 44 % in the median). Catches a total that is not the price
    per m2 times the area (``total.multiply_by`` lost)."""
    before = totals(served.value(served.rows))
    after = totals(served.value(served.changed(area_m2=lambda a: min(300.0, a * 1.5))))
    assert (after > before * 1.05).all(), np.min(after / before)


def test_a_newer_building_does_not_lower_the_price_per_m2_by_much(served: ServedAvm) -> None:
    """The same flat, location and sale in a building 10 years newer: at most 10 % cheaper per m2
    for any sale, and no cheaper in the median.

    Why a tolerance and not "never cheaper": in the Boliga sales newer is not uniformly dearer.
    Buildings of the 1960s-80s sell lowest (median 25-27,000 DKK/m2 in the training rows, against
    33-40,000 for 1920-1959 and 37-52,000 after 2000): from one decade to the next the median
    falls by up to 18 % (1950s to 1960s), so ten years newer can rightly mean cheaper. Most of
    that gap is location (the estates lie outside the old city), which is held fixed here: 10 %
    per sale leaves room for the rest, and the median sale must not get cheaper.
    The quick model moves a sale by -3.4 % .. +2.7 % (median -0.1 %). A model that reads the
    year from another column does not react at all (construction year and floor swapped: every
    sale stays where it was) or far more.
    """
    before = per_m2(served.value(served.rows))
    after = per_m2(served.value(served.changed(construction_year=lambda y: min(2025.0, y + 10))))
    ratio = after / before
    assert ratio.min() >= 0.9, ratio.min()
    assert np.median(ratio) >= 0.98, np.median(ratio)
    # and the year is used at all (an input wired to the wrong column is ignored, or clipped)
    assert np.abs(ratio - 1).max() >= 0.01, np.abs(ratio - 1).max()


def test_an_unseen_zip_code_is_valued_with_a_warning(served: ServedAvm) -> None:
    """A zip code no training sale had: a finite, plausible price and a warning naming it.

    Catches warnings lost, and a price left in the model's log space (about 10 DKK/m2)."""
    train = served.pipeline.prepared_dir / "train.csv"
    with train.open(newline="", encoding="utf-8") as handle:
        seen = {record["zip_code"] for record in csv.DictReader(handle)}
    unseen = next(f"{code:04d}" for code in range(9999, 0, -1) if f"{code:04d}" not in seen)
    row = {**served.rows[0], "zip_code": unseen}
    (valuation,) = served.value([row])
    assert any(w.startswith(f"zip_code '{unseen}'") for w in valuation["warnings"])
    assert np.isfinite(valuation["price_per_m2"]) and np.isfinite(valuation["total_price"])
    assert 3_000 <= valuation["price_per_m2"] <= 200_000  # prepare's plausible range
    (known,) = served.value([served.rows[0]])
    assert not [w for w in known["warnings"] if w.startswith("zip_code")]


def test_the_order_of_rows_in_a_batch_changes_no_prediction(served: ServedAvm) -> None:
    """Invariance: each row is valued on its own, whatever else is in the request and where.

    Catches predictions returned in another order than the rows (e.g. sorted)."""
    before = served.value(served.rows)
    order = np.random.default_rng(0).permutation(len(served.rows))
    after = served.value([served.rows[i] for i in order])
    for position, i in enumerate(order):
        assert after[position] == before[i]
    alone = served.value([served.rows[order[0]]])
    assert alone[0] == before[order[0]]
