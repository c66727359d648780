"""Accounting for every row a reader sees: read = kept + filtered + refused.

A reader that drops rows without saying so shrinks a dataset behind the user's back (an unclosed
quote once swallowed 1,954 sales of a 32,817-line file without a word). Every reader therefore
fills a :class:`RowReport` per source file: the physical lines, the records read, the rows
*refused* because they are malformed (with a reason and the first few places), and the rows
*filtered* by a rule the project declares (a row filter, an outlier rule: not an error).
A :class:`RefusalPolicy` (``project.data.max_refused_fraction`` and ``project.data.on_refused``)
decides whether refused rows stop the run; any refusal is always logged as a warning.
"""

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from modelyard.core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

EXAMPLES_KEPT = 5
"""How many places (line numbers, file names) a report keeps per refusal reason."""

DEFAULT_MAX_REFUSED_FRACTION = 0.001
"""0.1 %: one damaged line in a scraped file passes; a swallowed block of lines does not."""

DEFAULT_MAX_FIELD_LENGTH = 100_000
"""Characters. Real fields are short; a longer one is a runaway quote or a damaged line."""

OnRefused = Literal["fail", "warn"]
_ON_REFUSED: tuple[OnRefused, ...] = ("fail", "warn")


@dataclass
class Refusal:
    """How many rows one reason refused, and where the first few were."""

    count: int = 0
    first: list[int | str] = field(default_factory=list)

    def add(self, count: int, places: Sequence[int | str]) -> None:
        """Count ``count`` rows, keeping the first of ``places`` (where they were)."""
        self.count += count
        self.first.extend(places[: max(0, EXAMPLES_KEPT - len(self.first))])


@dataclass
class RowReport:
    """What one reader did with one source (a file, a meter table, an image folder).

    ``read`` counts the records the source holds (for a CSV: the data records, so not the header
    nor blank lines); every one of them ends up kept, filtered or refused. ``lines`` is the count
    of physical lines, so that ``lines == header_lines + blank_lines + record lines`` can be
    checked: a record that swallowed lines is visible.
    """

    source: str
    unit: str = "rows"
    lines: int | None = None
    header_lines: int = 0
    blank_lines: int = 0
    read: int = 0
    refusals: dict[str, Refusal] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str, where: int | str) -> None:
        """Count one refused row (``where``: its line number, or its name)."""
        self.refuse_many(reason, 1, [where])

    def refuse_many(self, reason: str, count: int, places: Sequence[int | str]) -> None:
        """Count ``count`` refused rows; ``places`` lists where they were (at least the first)."""
        if count:
            self.refusals.setdefault(reason, Refusal()).add(count, places)

    def filter(self, rule: str, count: int) -> None:
        """Count ``count`` rows removed by the declared rule ``rule``."""
        if count:
            self.filtered[rule] = self.filtered.get(rule, 0) + int(count)

    @property
    def refused(self) -> int:
        return sum(refusal.count for refusal in self.refusals.values())

    @property
    def kept(self) -> int:
        return self.read - self.refused - sum(self.filtered.values())

    @property
    def refused_fraction(self) -> float:
        return self.refused / self.read if self.read else 0.0

    def describe_refusals(self) -> str:
        """``unclosed_quote 1 (line 1001); too_many_fields 2 (lines 7, 9)`` for messages."""
        where = "line" if self.unit == "rows" else self.unit.rstrip("s")
        parts = []
        for reason, refusal in sorted(self.refusals.items()):
            places = ", ".join(str(place) for place in refusal.first)
            more = ", ..." if refusal.count > len(refusal.first) else ""
            plural = "s" if len(refusal.first) > 1 else ""
            parts.append(f"{reason} {refusal.count} ({where}{plural} {places}{more})")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"unit": self.unit}
        if self.lines is not None:
            document.update(
                lines=self.lines, header_lines=self.header_lines, blank_lines=self.blank_lines
            )
        document.update(
            read=self.read,
            kept=self.kept,
            filtered=sum(self.filtered.values()),
            refused=self.refused,
            refused_fraction=round(self.refused_fraction, 6),
            filtered_by_rule=dict(self.filtered),
            refused_by_reason={
                reason: {"count": refusal.count, "first": list(refusal.first)}
                for reason, refusal in sorted(self.refusals.items())
            },
        )
        return document


@dataclass(frozen=True)
class RefusalPolicy:
    """When refused rows stop a run, and the longest field a reader accepts."""

    max_refused_fraction: float = DEFAULT_MAX_REFUSED_FRACTION
    on_refused: OnRefused = "fail"
    max_field_length: int = DEFAULT_MAX_FIELD_LENGTH

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> "RefusalPolicy":
        """Read the three ``project.data`` options; a bad value is a ConfigError naming its key."""
        data = data if data is not None else {}
        fraction = data.get("max_refused_fraction", DEFAULT_MAX_REFUSED_FRACTION)
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ConfigError(
                f"project.data.max_refused_fraction must be a number in [0, 1], got {fraction!r}"
            )
        if not (math.isfinite(fraction) and 0 <= fraction <= 1):
            raise ConfigError(
                f"project.data.max_refused_fraction must be in [0, 1], got {fraction!r}"
            )
        on_refused = data.get("on_refused", "fail")
        if on_refused not in _ON_REFUSED:
            raise ConfigError(f"project.data.on_refused must be fail or warn, got {on_refused!r}")
        length = data.get("max_field_length", DEFAULT_MAX_FIELD_LENGTH)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(
                f"project.data.max_field_length must be a positive whole number of characters, "
                f"got {length!r}"
            )
        return cls(float(fraction), cast(OnRefused, on_refused), length)

    def check(self, report: RowReport) -> None:
        """Warn about any refused row; raise DataError above the threshold when set to fail."""
        if not report.refused:
            return
        message = (
            f"{report.source}: {report.refused} of {report.read} {report.unit} refused "
            f"({report.refused_fraction:.3%}): {report.describe_refusals()}"
        )
        if report.refused_fraction > self.max_refused_fraction and self.on_refused == "fail":
            raise DataError(
                f"{message}; above project.data.max_refused_fraction="
                f"{self.max_refused_fraction:g} (fix the file, or set "
                "project.data.on_refused=warn to go on without these rows)"
            )
        logger.warning("REFUSED ROWS %s", message)


class ReadLedger:
    """The row reports of one prepare run, each checked against the policy as it arrives."""

    def __init__(self, policy: RefusalPolicy | None = None) -> None:
        self.policy = policy or RefusalPolicy()
        self.reports: dict[str, RowReport] = {}

    def add(self, report: RowReport) -> RowReport:
        self.policy.check(report)
        self.reports[report.source] = report
        return report

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {source: report.to_json() for source, report in self.reports.items()}
