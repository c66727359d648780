"""Text that is safe to put into a CSV file people open in a spreadsheet (CSV injection).

A spreadsheet evaluates a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula
(``=HYPERLINK(...)``, ``=cmd|...``), and a leading tab or carriage return can hide one. Every CSV
the project writes for people (``modelyard predict`` outputs, prepared tables) passes its cells
through :func:`spreadsheet_safe`, which prefixes such text with a single quote, as OWASP
recommends, so the spreadsheet shows it as text. Genuine numbers (``-3.5``, ``+1e3``) are left
alone: a negative number must stay a number. Text that already starts with a quote followed by
such text is prefixed too, which makes :func:`spreadsheet_original` an exact inverse for files the
pipeline reads back.

Pure Python (no pandas): serving uses it.
"""

import csv
import re
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE_PREFIX = "'"
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

T = TypeVar("T")


def _needs_prefix(text: str) -> bool:
    if text.startswith(FORMULA_STARTS):
        return _NUMBER.fullmatch(text) is None
    return text.startswith(QUOTE_PREFIX) and _needs_prefix(text[1:])


def spreadsheet_safe(value: T) -> T | str:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and _needs_prefix(value):
        return QUOTE_PREFIX + value
    return value


def spreadsheet_original(value: T) -> T | str:
    """The inverse of :func:`spreadsheet_safe`, for CSV files the pipeline reads back."""
    if isinstance(value, str) and value.startswith(QUOTE_PREFIX) and _needs_prefix(value[1:]):
        return value[1:]
    return value


class _Writer(Protocol):
    def writerow(self, row: Iterable[Any], /) -> Any: ...


class SpreadsheetSafeWriter:
    """A ``csv.writer`` whose every cell (header included) goes through :func:`spreadsheet_safe`.

    Cells that are neither text, numbers nor None (an exception as an error message) are written
    as their text, so they are checked as text too.
    """

    def __init__(self, handle: Any) -> None:
        self._writer: _Writer = csv.writer(handle)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([_safe_cell(cell) for cell in row])


def _safe_cell(cell: Any) -> Any:
    if cell is None or isinstance(cell, int | float):
        return cell
    return spreadsheet_safe(str(cell))
