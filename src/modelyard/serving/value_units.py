"""What a predicted number measures, so that each Prometheus histogram holds one unit.

A family's serving adapter says the unit of the values it records (``PredictionEvent.unit``); the
server exports them as ``modelyard_prediction_<noun>{output}``, with buckets that fit the unit.
Watts are then never added to prices, nor prices to probabilities, by a query that sums a
histogram, and the name tells a dashboard's reader what the axis means.
"""

import re
from dataclasses import dataclass

PREFIX = "modelyard_prediction_"
_NOUN = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class ValueUnit:
    """A unit of predicted values: the histogram's name suffix, help text and buckets."""

    #: the unit noun that ends the metric's name (``watts``, ``ratio``, ``dkk_per_m2``)
    noun: str
    #: what the values are, for the metric's help text
    description: str
    buckets: tuple[float, ...]

    def __post_init__(self) -> None:
        if not _NOUN.fullmatch(self.noun):
            raise ValueError(f"unit noun {self.noun!r} is not a Prometheus name part")
        if list(self.buckets) != sorted(set(self.buckets)) or not self.buckets:
            raise ValueError(f"buckets of {self.noun} must be increasing and not empty")

    @property
    def metric_name(self) -> str:
        return PREFIX + self.noun


def log_buckets(low_exponent: int, high_exponent: int) -> tuple[float, ...]:
    """1-2-5 steps over the decades 10**low .. 5 * 10**high: for values whose scale varies."""
    return tuple(
        round(m * 10.0**e, 10) for e in range(low_exponent, high_exponent + 1) for m in (1, 2, 5)
    )


#: Mean power of each appliance over one request (NILM): off appliances fall in the first bucket,
#: a kettle or an oven in the kilowatt ones.
WATTS = ValueUnit(
    "watts",
    "Predicted mean power of each appliance over one request, in watts.",
    (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0,
     5000.0, 10000.0, 20000.0),
)  # fmt: skip
#: A probability (a classifier's top-1 probability): linear tenths, finer near certainty.
RATIO = ValueUnit(
    "ratio",
    "Predicted probability, from 0 to 1 (a classifier's top class).",
    (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
#: Noun of a regression target whose unit is not configured.
UNCONFIGURED_TARGET = "target_units"


def target_unit(unit: str, target: str) -> ValueUnit:
    """A regression target's unit as its project configures it (``DKK/m2`` -> ``dkk_per_m2``,
    ``USD/sqft`` -> ``usd_per_sqft``; none -> ``target_units``), on a log scale: prices and
    other targets span decades, and the unit does not say which."""
    noun = unit.strip().lower().replace("²", "2").replace("³", "3")
    noun = noun.replace("%", " percent ").replace("/", " per ")
    noun = re.sub(r"[^a-z0-9]+", "_", noun).strip("_")
    if not noun:
        noun = UNCONFIGURED_TARGET
    elif not noun[0].isalpha():
        noun = f"units_{noun}"
    shown = f" ({unit.strip()})" if unit.strip() else ""
    return ValueUnit(noun, f"Predicted {target}{shown}.", log_buckets(-2, 7))
