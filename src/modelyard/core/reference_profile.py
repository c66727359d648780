"""The reference profile: what drift is measured against, written into the bundle at export.

A bounded sample of the training split, described as the monitor sees served requests: one row
per request (or per request chunk), one column per drift feature, computed by the same family
function that the server uses when it logs a prediction (``projects/<family>/drift_features``).
Plain JSON, column by column; never a pickle, never a dataframe format.

This module is part of ``core``: it imports neither pandas nor numpy, so that the server and
the monitor can both read it.
"""

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelyard.core.errors import BundleError

PROFILE_FILE = "reference_profile.json"
PROFILE_FORMAT = 1
#: The most rows a profile may hold: enough for stable drift tests, small enough for a bundle.
MAX_ROWS = 5000

Kind = Literal["numerical", "categorical"]
Group = Literal["input", "prediction", "target", "embedding"]
Value = float | str | None
_KINDS = ("numerical", "categorical")
_GROUPS = ("input", "prediction", "target", "embedding")


@dataclass(frozen=True)
class Column:
    """One drift feature: how it is tested (``kind``) and what it describes (``group``)."""

    kind: Kind
    group: Group


@dataclass(frozen=True)
class ReferenceProfile:
    """A family's reference sample: ``data[name]`` holds ``rows`` values for each column."""

    family: str
    drawn: str
    seed: int
    columns: Mapping[str, Column]
    data: Mapping[str, Sequence[Value]]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    #: The accuracy to expect on this sample's distribution, where the evaluation's test data is
    #: another population (NILM: another house, whose use of its appliances sets its MAE and
    #: F1): the family's realised-accuracy metrics scored on the sample itself. Empty when the
    #: evaluation's ``metrics`` are the ones to expect (tabular, images: a test split of the
    #: training population).
    expected_metrics: Mapping[str, float] = field(default_factory=dict)
    #: What ``expected_metrics`` were measured on, in words (required with them).
    expected_drawn: str = ""

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(f"reference profile: {problem}")

    @property
    def rows(self) -> int:
        return len(next(iter(self.data.values()), ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "family": self.family,
            "drawn": self.drawn,
            "rows": self.rows,
            "seed": self.seed,
            "columns": {
                name: {"kind": c.kind, "group": c.group} for name, c in self.columns.items()
            },
            "data": {name: list(values) for name, values in self.data.items()},
            "metrics": dict(self.metrics),
            "expected_metrics": dict(self.expected_metrics),
            "expected_drawn": self.expected_drawn,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), allow_nan=False, separators=(",", ":")))

    @classmethod
    def from_json(cls, raw: Any) -> "ReferenceProfile":
        """Parse a profile; ValueError with the first problem when it is not one."""
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("format") != PROFILE_FORMAT:
            raise ValueError(
                f"format {raw.get('format')!r}; this modelyard reads format {PROFILE_FORMAT}"
            )
        try:
            columns = {
                str(name): Column(kind=spec["kind"], group=spec["group"])
                for name, spec in dict(raw["columns"]).items()
            }
            data = {str(name): list(values) for name, values in dict(raw["data"]).items()}
            profile = cls(
                family=str(raw["family"]),
                drawn=str(raw["drawn"]),
                seed=int(raw["seed"]),
                columns=columns,
                data=data,
                metrics=dict(raw.get("metrics") or {}),
                # absent from profiles written before they existed: the format is unchanged
                expected_metrics=dict(raw.get("expected_metrics") or {}),
                expected_drawn=str(raw.get("expected_drawn") or ""),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field: {exc}") from exc
        if raw.get("rows") != profile.rows:
            raise ValueError(f"says {raw.get('rows')} rows but holds {profile.rows}")
        return profile

    @classmethod
    def read(cls, path: Path) -> "ReferenceProfile":
        """Read ``path``; :class:`BundleError` naming the file and the problem otherwise."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_json(raw)
        except OSError as exc:
            raise BundleError(f"cannot read the reference profile {path}: {exc}") from exc
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise BundleError(
                f"{path} is not a valid reference profile: {exc}; re-export the bundle"
            ) from exc


def finite_number(value: Any) -> float | None:
    """``value`` as a numerical column's value: a finite number as a float, None otherwise
    (missing, text, a boolean, NaN): how drift rows read logged JSON without ever failing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def column_data(
    rows: Sequence[Mapping[str, Value]], names: Iterable[str]
) -> dict[str, list[Value]]:
    """Drift rows (as a family's ``log_rows`` gives them) as the profile's columns ``names``:
    None where a row lacks one."""
    return {name: [row.get(name) for row in rows] for name in names}


def _problem(profile: ReferenceProfile) -> str:
    """The first reason ``profile`` is not valid, or ''."""
    if set(profile.columns) != set(profile.data):
        return "columns and data name different features"
    if not profile.columns:
        return "no columns"
    for name, column in profile.columns.items():
        if column.kind not in _KINDS or column.group not in _GROUPS:
            return f"column {name!r} has kind {column.kind!r}, group {column.group!r}"
    expected = _expected_problem(profile)
    if expected:
        return expected
    lengths = {len(values) for values in profile.data.values()}
    if len(lengths) != 1:
        return "columns hold different numbers of rows"
    if not 0 < lengths.pop() <= MAX_ROWS:
        return f"needs 1 to {MAX_ROWS} rows"
    for name, values in profile.data.items():
        numerical = profile.columns[name].kind == "numerical"
        for value in values:
            if value is None:
                continue
            if numerical and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                return f"numerical column {name!r} holds {value!r}"
            if not numerical and not isinstance(value, str):
                return f"categorical column {name!r} holds {value!r} (expected text)"
    return ""


def _expected_problem(profile: ReferenceProfile) -> str:
    """The first reason the profile's ``expected_metrics`` are not valid, or ''."""
    for name, value in profile.expected_metrics.items():
        if finite_number(value) is None:
            return f"expected metric {name!r} is {value!r}, not a finite number"
    if profile.expected_metrics and not profile.expected_drawn:
        return "expected_metrics without expected_drawn (what they were measured on)"
    return ""
