"""Example rows shipped with the bundle (``GET /examples``: a CSV of test rows named as the
request's fields), offered as "pick an example". A server from before ``/examples``, or one
whose bundle ships no CSV, has none, and the page simply does not offer the choice."""

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from modelyard.webui.client import ServerAnswerError, ServerClient
from modelyard.webui.tabular_batch import BatchError, read_table
from modelyard.webui.tabular_form import FormField

#: Fields quoted in an example's label (the rest are in the form once picked).
LABEL_FIELDS = 3


@dataclass(frozen=True)
class ExampleRow:
    label: str
    cells: dict[str, str]

    def form_values(self, fields: list[FormField]) -> list[str | None]:
        """The example as the form's values, field by field, as the file writes them (None
        where it has no value)."""
        return [self.cells.get(f.name, "").strip() or None for f in fields]


def example_rows(client: ServerClient, fields: list[FormField]) -> list[ExampleRow]:
    """Every row of every CSV example the server lists; [] when it lists none or cannot."""
    try:
        listed = client.get_json("/examples")
    except ServerAnswerError:
        return []
    entries = listed.get("examples") if isinstance(listed, dict) else None
    rows: list[ExampleRow] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not _is_csv(entry):
            continue
        name = str(entry.get("name", ""))
        try:
            table = read_table(client.get_bytes(f"/examples/{quote(name)}"))
        except (ServerAnswerError, BatchError):
            continue
        shown = [f.name for f in fields if f.name in table.columns][:LABEL_FIELDS]
        for cells in table.rows:
            summary = ", ".join(f"{column} {cells[column]}" for column in shown)
            rows.append(ExampleRow(f"Example {len(rows) + 1}: {summary}", cells))
    return rows


def _is_csv(entry: dict[str, Any]) -> bool:
    return "csv" in str(entry.get("media_type", "")) or str(entry.get("name", "")).endswith(".csv")
