"""Batch valuation: a CSV of rows -> the server, in requests of at most its ``max_rows`` -> the
same CSV with the prediction columns added.

No row is dropped in silence: a row the server refuses keeps its place in the result with the
server's sentence in an ``error`` column, and the page names it. Cells are sent as the JSON
values the schema asks for; the server judges them, as it does for the form.
"""

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.webui.client import ServerAnswerError, ServerClient
from modelyard.webui.tabular_form import (
    WARNINGS_FIELD,
    AnswerField,
    FormField,
    value_from_text,
)

#: Rows one upload may hold (the UI keeps them in memory while the server values them).
MAX_BATCH_ROWS = 100_000
#: Refused rows after which the batch stops: past this the file is wrong, not a few rows.
MAX_REFUSED_ROWS = 20
#: Refused rows quoted on the page (all of them are in the result file).
QUOTED_REFUSALS = 3
#: Statuses that mean "something in these rows", so each row is tried alone to find which.
ROW_STATUSES = (413, 422)
ERROR_COLUMN = "error"
#: Reports the share of rows done (0..1) while a batch runs.
ProgressFn = Callable[[float], None]


class BatchError(ValueError):
    """The file cannot be valued at all; ``str`` is the sentence to show."""


@dataclass(frozen=True)
class Table:
    """A CSV as read: its header and its rows (cells as text), in file order."""

    columns: list[str]
    rows: list[dict[str, str]]


@dataclass
class BatchResult:
    """Per input row, the prediction or the server's sentence refusing it."""

    predictions: list[dict[str, Any] | None] = field(default_factory=list)
    refusals: dict[int, str] = field(default_factory=dict)

    def summary(self) -> str:
        """A line for the page: how many rows were valued, and the first refusals by row."""
        valued = sum(p is not None for p in self.predictions)
        text = f"Valued {valued} of {len(self.predictions)} rows."
        if not self.refusals:
            return text
        quoted = list(self.refusals.items())[:QUOTED_REFUSALS]
        more = len(self.refusals) - len(quoted)
        tail = f"\n\n(and {more} more, see the `{ERROR_COLUMN}` column)" if more > 0 else ""
        lines = "\n".join(f"- {row_label(i)}: {why}" for i, why in quoted)
        return f"{text} The server refused {len(self.refusals)}:\n{lines}{tail}"


def row_label(index: int) -> str:
    """How the page names a data row: counted from 1, with its line in the file (the header is
    line 1)."""
    return f"row {index + 1} (line {index + 2})"


def read_table(content: bytes) -> Table:
    """A CSV upload -> its columns and rows; a sentence for what cannot be a table."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BatchError("The file is not UTF-8 text; save the table as a UTF-8 CSV.") from None
    first_line = text.split("\n", 1)[0]
    # a spreadsheet in a comma-decimal locale (Danish Excel) separates with semicolons
    delimiter = ";" if ";" in first_line and "," not in first_line else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if not header or not any(name.strip() for name in header):
        raise BatchError("The file is empty; a CSV with a header row is expected.")
    columns = [name.strip() for name in header]
    if len(set(columns)) != len(columns):
        raise BatchError("The CSV's header names a column twice.")
    rows = []
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            raise BatchError(
                f"Line {line} has {len(cells)} cells, the header has {len(columns)} columns."
            )
        rows.append(dict(zip(columns, cells, strict=True)))
        if len(rows) > MAX_BATCH_ROWS:
            raise BatchError(f"The CSV has more than {MAX_BATCH_ROWS:,} rows; split it.")
    if not rows:
        raise BatchError("The CSV has a header but no rows.")
    return Table(columns, rows)


def check_columns(fields: Sequence[FormField], table: Table) -> None:
    """Every required field must be a column (named as in the form's schema)."""
    missing = [f.name for f in fields if f.required and f.name not in table.columns]
    if missing:
        raise BatchError(
            f"The CSV lacks the required column(s) {', '.join(missing)}; "
            f"its columns are {', '.join(table.columns)}."
        )


def request_row(fields: Sequence[FormField], cells: dict[str, str]) -> dict[str, Any]:
    """One CSV row as a request row: the schema's fields only, empty cells left out."""
    row = {}
    for form_field in fields:
        value = value_from_text(form_field, cells.get(form_field.name, ""))
        if value is not None:
            row[form_field.name] = value
    return row


def value_table(
    client: ServerClient,
    fields: Sequence[FormField],
    table: Table,
    max_rows: int,
    progress: ProgressFn | None = None,
) -> BatchResult:
    """Value every row, ``max_rows`` per request. A refused request is retried row by row so
    the refusal lands on the row it is about; a server that cannot be reached (or any other
    refusal) ends the batch with its sentence."""
    check_columns(fields, table)
    rows = [request_row(fields, cells) for cells in table.rows]
    result = BatchResult()
    for start in range(0, len(rows), max(1, max_rows)):
        chunk = rows[start : start + max(1, max_rows)]
        try:
            result.predictions += _predictions(client.predict_json(chunk).body, len(chunk))
        except ServerAnswerError as error:
            if error.status not in ROW_STATUSES:
                raise
            _value_one_by_one(client, chunk, start, result)
        if progress is not None:
            progress(min(1.0, (start + len(chunk)) / len(rows)))
    return result


def _value_one_by_one(
    client: ServerClient, chunk: list[dict[str, Any]], start: int, result: BatchResult
) -> None:
    for offset, row in enumerate(chunk):
        try:
            result.predictions += _predictions(client.predict_json(row).body, 1)
        except ServerAnswerError as error:
            if error.status not in ROW_STATUSES:
                raise
            result.predictions.append(None)
            result.refusals[start + offset] = str(error)
            if len(result.refusals) > MAX_REFUSED_ROWS:
                first, why = next(iter(result.refusals.items()))
                raise BatchError(
                    f"Stopped: the server refused more than {MAX_REFUSED_ROWS} rows; "
                    f"the first, {row_label(first)}: {why}"
                ) from None


def _predictions(body: Any, rows: int) -> list[dict[str, Any] | None]:
    """The answer's predictions, one per row sent, or a sentence saying the answer is not."""
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        raise BatchError(f"The server's answer to {rows} row(s) does not hold one prediction each.")
    return [p if isinstance(p, dict) else None for p in predictions]


def result_csv(table: Table, answers: Sequence[AnswerField], result: BatchResult) -> str:
    """The input columns as uploaded, then one column per answer number (prefixed
    ``predicted_`` where the input already has that name), the warnings, and an ``error``
    column when a row was refused."""
    taken = set(table.columns)
    names = [a.name if a.name not in taken else f"predicted_{a.name}" for a in answers]
    header = [*table.columns, *names, WARNINGS_FIELD]
    if result.refusals:
        header.append(ERROR_COLUMN)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for i, cells in enumerate(table.rows):
        prediction = result.predictions[i] or {}
        line = [cells[c] for c in table.columns]
        line += [_cell(prediction.get(a.name)) for a in answers]
        line.append("; ".join(prediction.get(WARNINGS_FIELD) or []))
        if result.refusals:
            line.append(result.refusals.get(i, ""))
        writer.writerow(line)
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)
