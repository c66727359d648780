"""The registry of named domain parsers that a schema's derived column may name as its ``op``.

A parser reads the text of one cell and returns a value, or ``None`` when the text holds none
(an address without a floor). Adding a domain means a module of pure parsers and an entry here;
the schema then refers to it by name (``{name: floor, op: danish_floor, source: address}``) and
the derived-columns machinery stays generic.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from modelyard.projects.tabular.derived.danish_address import danish_floor, danish_side


@dataclass(frozen=True)
class TextParser:
    """Text of a cell -> a value; ``numeric`` parsers give a float column (NaN when missing)."""

    parse: Callable[[str], float | str | None]
    numeric: bool


PARSERS: Final[Mapping[str, TextParser]] = {
    "danish_floor": TextParser(danish_floor, numeric=True),
    "danish_side": TextParser(danish_side, numeric=False),
}
