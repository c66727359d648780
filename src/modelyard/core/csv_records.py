"""CSV parsing line by line, so that every physical line is accounted for.

pandas' parsers lose lines without a trace in two ways: an unclosed quote makes the rest of the
file (up to the next quote character) one field, and a bad line is skipped or, past the csv
module's field size limit, vanishes. Here each record starts on a known line and is parsed on its
own: a quote that does not close on its line may continue on the next lines only when that yields
one record of the table's width within ``max_field_length`` characters; otherwise the line is
refused as ``unclosed_quote`` and parsing resumes on the next line, so one bad quote costs one row.

Refusal reasons: ``unclosed_quote``, ``bad_quoting`` (text after a closing quote),
``field_too_long`` (a field over ``max_field_length``), ``too_many_fields`` (more fields than the
header or first record: typically two records glued together by a lost line break). Shorter
records are kept; their missing cells are missing values.
"""

import csv
import io
import re
from dataclasses import dataclass, field

import pandas as pd

from modelyard.core.errors import ConfigError, DataError
from modelyard.core.row_accounting import RowReport

QUOTE = '"'
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_END_OF_DATA = "unexpected end of data"


@dataclass
class Table:
    """A parsed CSV as a frame (columns numbered from 0), its header and each row's line."""

    header: list[str] | None
    frame: pd.DataFrame
    line_numbers: list[int]


def read_frame(
    text: str,
    separator: str,
    header: bool,
    max_field_length: int,
    report: RowReport,
    infer_types: bool = False,
) -> Table:
    """Parse ``text`` into a frame of text cells (or, with ``infer_types``, pandas' own types).

    Text without quote characters or overlong lines cannot hide a record: it is accounted for
    line by line with cheap counts and handed to pandas' C parser, which then skips exactly the
    lines counted as too wide (several times faster on files of a million lines). Anything else
    goes through :func:`parse_records`.
    """
    if len(separator) != 1:
        raise ConfigError(f"the CSV separator must be one character, got {separator!r}")
    text = text.removeprefix("\ufeff")
    lines = split_lines(text)
    if QUOTE in text or max(map(len, lines), default=0) > max_field_length:
        records = parse_records(text, separator, header, max_field_length, report)
        frame = pd.DataFrame(records.rows, columns=range(records.width), dtype=object)
        if infer_types:
            frame = frame.infer_objects()
        return Table(records.header, frame, records.line_numbers)
    return _read_plain(text, lines, separator, header, report, infer_types)


def _read_plain(
    text: str,
    lines: list[str],
    separator: str,
    header: bool,
    report: RowReport,
    infer_types: bool,
) -> Table:
    report.lines = len(lines)
    numbers = [i for i, line in enumerate(lines, start=1) if line]
    report.blank_lines = len(lines) - len(numbers)
    if not numbers:
        return Table(None, pd.DataFrame(), [])
    counts = [lines[number - 1].count(separator) + 1 for number in numbers]
    width = counts[0]
    names = lines[numbers[0] - 1].split(separator) if header else None
    skip = numbers[0] if header else 0  # the physical lines up to the header
    if header:
        report.header_lines = 1
        numbers, counts = numbers[1:], counts[1:]
    report.read = len(numbers)
    kept = [number for number, count in zip(numbers, counts, strict=True) if count <= width]
    for number, count in zip(numbers, counts, strict=True):
        if count > width:
            report.refuse("too_many_fields", number)
    frame = pd.read_csv(
        io.StringIO(text),
        sep=separator,
        header=None,
        skiprows=skip,
        names=range(width),
        index_col=False,
        on_bad_lines="skip",
        engine="c",
        quoting=csv.QUOTE_NONE,
        dtype=None if infer_types else str,
        keep_default_na=infer_types,
    )
    if len(frame) != len(kept):
        raise DataError(f"internal: {len(frame)} rows parsed where {len(kept)} were counted")
    return Table(names, frame, kept)


@dataclass
class Records:
    """The header (when the file has one), the data records and the line each one starts on."""

    header: list[str] | None
    rows: list[list[str]] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)

    @property
    def width(self) -> int:
        if self.header is not None:
            return len(self.header)
        return len(self.rows[0]) if self.rows else 0


class _RefusedError(Exception):
    """A line that cannot start a record, with the reason."""


def split_lines(text: str) -> list[str]:
    """Physical lines (``\\n``, ``\\r\\n`` or ``\\r`` ends a line), without a final empty one."""
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_records(
    text: str, separator: str, header: bool, max_field_length: int, report: RowReport
) -> Records:
    """Parse ``text`` into records, refusing malformed ones into ``report`` with line numbers."""
    if len(separator) != 1:
        raise ConfigError(f"the CSV separator must be one character, got {separator!r}")
    # the csv module's own limit (128 KiB by default) must not refuse what the policy allows
    csv.field_size_limit(max(csv.field_size_limit(), max_field_length + 1))
    lines = split_lines(text.removeprefix("\ufeff"))
    report.lines = len(lines)
    records = Records(header=None)
    width: int | None = None
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index]
        if not line:
            report.blank_lines += 1
            index += 1
            continue
        if QUOTE not in line and len(line) <= max_field_length:
            fields, used = line.split(separator), 1  # the common case, kept fast
        else:
            try:
                fields, used = _record_at(lines, index, separator, max_field_length, width)
            except _RefusedError as refused:
                index += 1
                report.read += 1
                report.refuse(str(refused), number)
                continue
        index += used
        if width is None:
            width = len(fields)
            if header:
                records.header = fields
                report.header_lines = used
                continue
        report.read += 1
        if len(fields) > width:
            report.refuse("too_many_fields", number)
            continue
        records.rows.append(fields)
        records.line_numbers.append(number)
    return records


def _record_at(
    lines: list[str], index: int, separator: str, max_length: int, width: int | None
) -> tuple[list[str], int]:
    """The record starting at ``lines[index]`` and how many lines it spans."""
    line = lines[index]
    if QUOTE not in line:
        fields = line.split(separator)
    else:
        try:
            fields = _parse(lines[index : index + 1], separator)
        except _RefusedError as refused:
            if str(refused) != "unclosed_quote":
                raise
            return _multiline_record(lines, index, separator, max_length, width)
    _check_lengths(fields, max_length)
    return fields, 1


def _multiline_record(
    lines: list[str], index: int, separator: str, max_length: int, width: int | None
) -> tuple[list[str], int]:
    """A record whose quoted field holds line breaks, accepted only if it is exactly one row.

    The quote may close only on a later line that holds a quote character; lines are added until
    it closes or the record grows past ``max_length``.
    """
    size = len(lines[index])
    stop = index + 1
    while stop < len(lines) and size <= max_length:
        size += len(lines[stop]) + 1
        stop += 1
        if QUOTE not in lines[stop - 1]:
            continue
        try:
            fields = _parse(lines[index:stop], separator)
        except _RefusedError as refused:
            if str(refused) == "unclosed_quote":
                continue
            break
        if width is not None and len(fields) == width:
            _check_lengths(fields, max_length)
            return fields, stop - index
        break
    raise _RefusedError("unclosed_quote")


def _parse(lines: list[str], separator: str) -> list[str]:
    """One record from ``lines`` with the csv module in strict mode, or :class:`_RefusedError`."""
    try:
        rows = list(csv.reader([f"{line}\n" for line in lines], delimiter=separator, strict=True))
    except csv.Error as exc:
        if _END_OF_DATA in str(exc):
            raise _RefusedError("unclosed_quote") from exc
        raise _RefusedError("bad_quoting") from exc
    if len(rows) != 1:
        raise _RefusedError("unclosed_quote")
    return rows[0]


def _check_lengths(fields: list[str], max_length: int) -> None:
    if sum(map(len, fields)) > max_length and max(map(len, fields)) > max_length:
        raise _RefusedError("field_too_long")
