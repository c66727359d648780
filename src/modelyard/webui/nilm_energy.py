"""What the NILM page says about one answer of ``POST /predict``: each appliance's energy over
the period, its share of the mains energy, the part estimated from edge readings, and, when the
upload carried measurements, the true energy and the mean absolute error.

All figures cover the readings the server predicted: every reading with ``edges=pad`` (the
first and last ``edge_readings`` of them from padded windows, so less reliable), or the
full-window ones from ``first_reading`` on with ``edges=valid``.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WH_PER_KWH = 1000.0
SECONDS_PER_HOUR = 3600.0


class NilmAnswerError(ValueError):
    """An answer that is not a NILM prediction (another server behind the URL)."""


@dataclass(frozen=True)
class NilmPrediction:
    """The parts of ``/predict``'s answer the page uses."""

    interval_s: int
    first_reading: int
    edge_readings: int
    appliances_w: dict[str, tuple[float, ...]]

    @property
    def readings(self) -> int:
        return len(next(iter(self.appliances_w.values()), ()))

    def edge_mask(self) -> tuple[bool, ...]:
        """For each predicted reading: was it estimated from a padded window?"""
        count, edge = self.readings, self.edge_readings
        return tuple(i < edge or i >= count - edge for i in range(count))

    @classmethod
    def from_answer(cls, body: Any) -> "NilmPrediction":
        """Check the answer's shape once, so nothing later fails on a stranger's JSON."""
        try:
            appliances = {
                str(name): tuple(float(value) for value in series)
                for name, series in body["appliances"].items()
            }
            prediction = cls(
                interval_s=int(body["interval_s"]),
                first_reading=int(body.get("first_reading", 0)),
                edge_readings=int(body["edge_readings"]),
                appliances_w=appliances,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise NilmAnswerError("The server's answer is not a NILM prediction.") from None
        if not appliances or len({len(series) for series in appliances.values()}) != 1:
            raise NilmAnswerError("The server's answer holds no appliance series of one length.")
        return prediction


@dataclass(frozen=True)
class ApplianceEnergy:
    """One row of the energy table; ``share`` is None when the mains used no energy."""

    name: str
    estimate_kwh: float
    share: float | None
    edge_kwh: float
    true_kwh: float | None = None
    mae_w: float | None = None


@dataclass(frozen=True)
class EnergySummary:
    """The period's figures: hours covered, the mains energy and one row per appliance."""

    hours: float
    mains_kwh: float
    appliances: tuple[ApplianceEnergy, ...]


def kwh(watts: Sequence[float], interval_s: int) -> float:
    """Energy of a power series sampled every ``interval_s`` seconds."""
    return math.fsum(watts) * interval_s / SECONDS_PER_HOUR / WH_PER_KWH


def mean_absolute_error(estimate: Sequence[float], truth: Sequence[float]) -> float:
    if len(estimate) != len(truth) or not estimate:
        raise ValueError("MAE needs two series of the same, non-zero length")
    return math.fsum(abs(a - b) for a, b in zip(estimate, truth, strict=True)) / len(estimate)


def summarise(
    prediction: NilmPrediction,
    mains_w: Sequence[float],
    truth_w: Mapping[str, Sequence[float]],
) -> EnergySummary:
    """The energy table for a prediction of ``mains_w`` (the whole uploaded series; the
    predicted readings are picked out by ``first_reading``), with measured ``truth_w`` (whole
    series too) for the appliances that have one. Negative mains count as 0 W, as the server
    treats them."""
    start, count, interval = prediction.first_reading, prediction.readings, prediction.interval_s
    mains = [max(value, 0.0) for value in mains_w[start : start + count]]
    mains_kwh = kwh(mains, interval)
    edges = prediction.edge_mask()
    rows = []
    for name, estimate in prediction.appliances_w.items():
        energy = kwh(estimate, interval)
        truth = truth_w.get(name)
        measured = None if truth is None else list(truth[start : start + count])
        rows.append(
            ApplianceEnergy(
                name=name,
                estimate_kwh=energy,
                share=energy / mains_kwh if mains_kwh > 0 else None,
                edge_kwh=kwh(
                    [w for w, edge in zip(estimate, edges, strict=True) if edge], interval
                ),
                true_kwh=None if measured is None else kwh(measured, interval),
                mae_w=None if measured is None else mean_absolute_error(estimate, measured),
            )
        )
    return EnergySummary(
        hours=count * interval / SECONDS_PER_HOUR, mains_kwh=mains_kwh, appliances=tuple(rows)
    )
