"""Computing the schema's derived columns: generic operations plus the registered text parsers.

Generic ``op``\\ s: ``regex`` (first capture group of ``pattern``), ``ratio`` (``source[0] /
source[1]``), ``copy`` and ``concat``; every other ``op`` is a named parser of :mod:`.parsers`
applied to the source column's text.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import pandas as pd

from modelyard.core.errors import ConfigError
from modelyard.projects.tabular.derived.parsers import PARSERS, TextParser
from modelyard.projects.tabular.frame_columns import as_text, numeric_column
from modelyard.projects.tabular.schema import Derivation

Deriver = Callable[[pd.DataFrame, Derivation], pd.Series]


def derive_columns(frame: pd.DataFrame, derivations: Sequence[Derivation]) -> pd.DataFrame:
    """A new frame with every derivation's column added, in order (later ones may use earlier)."""
    result = frame.copy()
    for derivation in derivations:
        result[derivation.name] = DERIVATION_OPS[derivation.op](result, derivation)
    return result


def _source_column(frame: pd.DataFrame, derivation: Derivation, column: str) -> pd.Series:
    if column not in frame.columns:
        raise ConfigError(
            f"derivation {derivation.name!r}: source column {column!r} is not in the table "
            f"(columns: {list(frame.columns)})"
        )
    return frame[column]


def _single_source(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    """The one source column of an op that reads one column."""
    source = derivation.source
    if isinstance(source, list):
        if len(source) != 1:
            raise ConfigError(
                f"derivation {derivation.name!r}: op {derivation.op} takes one source column, "
                f"got {source}"
            )
        source = source[0]
    return _source_column(frame, derivation, source)


def _map_text(column: pd.Series, function: Callable[[str], Any]) -> pd.Series:
    """``function`` applied to the text of each present cell; None for missing cells."""
    values = [None if text is None else function(text) for text in map(as_text, column)]
    return pd.Series(values, index=column.index, dtype=object)


def _derive_regex(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    try:
        pattern = re.compile(derivation.pattern or "")
    except re.error as exc:
        raise ConfigError(f"derivation {derivation.name!r}: invalid pattern: {exc}") from exc
    if pattern.groups < 1:
        raise ConfigError(
            f"derivation {derivation.name!r}: pattern {pattern.pattern!r} has no capture group"
        )

    def first_group(text: str) -> str | None:
        match = pattern.search(text)
        return None if match is None else match.group(1)

    return _map_text(_single_source(frame, derivation), first_group)


def _derive_ratio(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    """``source[0] / source[1]``; NaN where the divisor is 0 or missing (never inf)."""
    numerator, denominator = (
        numeric_column(_source_column(frame, derivation, name), f"derivation {derivation.name!r}")
        for name in derivation.source
    )
    return numerator / denominator.where(denominator != 0)


def _derive_copy(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    return _single_source(frame, derivation).copy()


def _derive_concat(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
    """The sources' text joined with `` | ``; missing when any source is missing."""
    sources = derivation.source if isinstance(derivation.source, list) else [derivation.source]
    columns = [list(map(as_text, _source_column(frame, derivation, name))) for name in sources]
    values = [
        None if any(part is None for part in parts) else " | ".join(str(p) for p in parts)
        for parts in zip(*columns, strict=True)
    ]
    return pd.Series(values, index=frame.index, dtype=object)


def _parsing(parser: TextParser) -> Deriver:
    """The op that applies ``parser`` to the text of the one source column."""

    def derive(frame: pd.DataFrame, derivation: Derivation) -> pd.Series:
        values = _map_text(_single_source(frame, derivation), parser.parse)
        return values.astype(float) if parser.numeric else values

    return derive


#: Every ``op`` a derivation may name: the generic operations, then the registered parsers.
DERIVATION_OPS: Final[Mapping[str, Deriver]] = {
    "regex": _derive_regex,
    "ratio": _derive_ratio,
    "copy": _derive_copy,
    "concat": _derive_concat,
    **{name: _parsing(parser) for name, parser in PARSERS.items()},
}
