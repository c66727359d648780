"""Any nested metrics dict as Markdown tables a person can read, without knowing the family.

Evaluation writes differently shaped metrics per family (NILM: per appliance, the model beside
its baselines; tabular: model vs baseline; vision: accuracy, macro-F1 and per class). One generic
rule covers them all: a dict's plain values form a two-column table, sibling dicts of plain values
(``model``, ``baseline``; one per class) form one table with a row each, so they can be compared
across; deeper dicts get a heading with their path and the same treatment.
"""

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Keys that describe where evaluation ran (paths on the training machine), not the model.
NOT_METRICS = frozenset({"plots", "evaluated", "source"})
#: Section headings stop getting deeper here (``####`` is the smallest that stands out).
HEADING = "####"
#: Between the parts of a nested section's heading, and in place of a missing value.
PATH_JOIN, MISSING = " / ", "n/a"
#: Lists longer than this are summarised by their length.
MAX_LISTED = 12


def metrics_markdown(metrics: Mapping[str, Any]) -> str:
    """All of ``metrics`` as Markdown; a sentence when there are none."""
    blocks = _section((), metrics)
    if not blocks:
        return "This bundle was exported without evaluation metrics."
    return "\n\n".join(blocks)


def _section(path: tuple[str, ...], everything: Mapping[str, Any]) -> list[str]:
    mapping = {key: value for key, value in everything.items() if key not in NOT_METRICS}
    plain = {key: value for key, value in mapping.items() if not _is_nested(value)}
    nested = {key: value for key, value in mapping.items() if _is_nested(value)}
    flat = {key: value for key, value in nested.items() if _is_flat_dict(value)}
    deeper = {key: value for key, value in nested.items() if key not in flat}
    blocks: list[str] = []
    if path and (plain or flat):
        blocks.append(f"{HEADING} {escape(PATH_JOIN.join(path))}")
    if plain:
        blocks.append(_pairs_table(plain))
    if flat:
        blocks.append(_rows_table(flat))
    for key, value in deeper.items():
        if isinstance(value, Mapping):
            blocks.extend(_section((*path, str(key)), value))
        else:
            blocks.extend([f"{HEADING} {escape(PATH_JOIN.join((*path, str(key))))}", _grid(value)])
    return blocks


def _is_nested(value: Any) -> bool:
    return isinstance(value, Mapping) or _is_grid(value)


def _is_flat_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and not any(map(_is_nested, value.values()))


def _is_grid(value: Any) -> bool:
    """A list of equally long lists of plain values (a confusion matrix)."""
    if not isinstance(value, list) or not value:
        return False
    rows = [row for row in value if isinstance(row, list)]
    return len(rows) == len(value) and len({len(row) for row in rows}) == 1


def _pairs_table(values: Mapping[str, Any]) -> str:
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {escape(str(key))} | {cell(value)} |" for key, value in values.items()]
    return "\n".join(lines)


def _rows_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per sibling dict, one column per key any of them has."""
    columns: list[str] = []
    for row in rows.values():
        columns += [str(key) for key in row if str(key) not in columns]
    lines = [
        "| | " + " | ".join(escape(column) for column in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for name, row in rows.items():
        values = {str(key): value for key, value in row.items()}
        cells = [cell(values[column]) if column in values else "" for column in columns]
        lines.append(f"| **{escape(str(name))}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _grid(rows: Sequence[Sequence[Any]]) -> str:
    width = len(rows[0])
    lines = ["| | " + " | ".join(str(index) for index in range(width)) + " |"]
    lines.append("| --- |" + " --- |" * width)
    lines += [
        f"| **{index}** | " + " | ".join(cell(value) for value in row) + " |"
        for index, row in enumerate(rows)
    ]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """One value as table text: numbers rounded for reading, lists joined, text escaped."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list):
        if len(value) > MAX_LISTED:
            return f"{len(value)} values"
        return ", ".join(cell(item) for item in value)
    return escape(str(value))


def number(value: float) -> str:
    """Four significant digits, with thousands separators for large values (no exponents)."""
    if math.isnan(value):
        return "NaN"
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.2e}"


#: Characters Markdown may read as markup inside a line (emphasis, strikethrough, code, links,
#: HTML, a table's column break).
_MARKUP = re.compile(r"([\\`*_~\[\]<>|])")


def escape(text: str) -> str:
    """``text`` as Markdown that shows exactly ``text`` on one line: every markup character
    escaped (no emphasis from ``_``, no column break from ``|``), line breaks as spaces."""
    return _MARKUP.sub(r"\\\1", text).replace("\n", " ")
