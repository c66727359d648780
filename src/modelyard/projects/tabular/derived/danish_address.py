"""Danish addresses: the floor and the door side of an apartment, read from the address text.

A Danish address is ``<street> <house number>[ <floor>[ <door>]]`` where the house number is
digits with an optional letter (``12C``), the floor is ``st``/``kl``/digits (usually with a dot)
and the door is ``th``/``tv``/``mf``, a number or a short code (``b``, ``t2``). Pure functions on
plain strings; :mod:`.parsers` registers them for the schema's derived columns.
"""

import re
from typing import Final

_HOUSE: Final = re.compile(r"\d+[a-zæøå]?", re.IGNORECASE)
_FLOOR: Final = re.compile(r"(st|kl|\d{1,2})\.?", re.IGNORECASE)
_DOOR: Final = re.compile(r"[a-z0-9æøå]{1,6}\.?", re.IGNORECASE)
_SIDE: Final = re.compile(r"(th|tv|mf)\.?", re.IGNORECASE)
_NAMED_FLOORS: Final = {"st": 0.0, "kl": -1.0}


def danish_floor(address: str) -> float | None:
    """The floor of a Danish address: ``st.`` 0, ``kl.`` -1, ``3.`` 3; None when it has none.

    Street names may contain numbers too (``H. C. Andersens Boulevard``, ``Frederik 7.s Vej``), so
    the house number is the first house-number-like token after which the rest of the address is
    a valid floor-and-door tail. An address without a floor is not an apartment.
    """
    tokens = address.replace(",", " ").split()
    for index in range(1, len(tokens)):
        if not _HOUSE.fullmatch(tokens[index]):
            continue
        tail = tokens[index + 1 :]
        if not tail:
            return None
        if _is_floor_tail(tail):
            return _floor_value(tail[0])
    return None


def _is_floor_tail(tail: list[str]) -> bool:
    """Whether ``tail`` is a floor followed by at most two door tokens (``2. tv c``)."""
    if len(tail) > 3 or not _FLOOR.fullmatch(tail[0]):
        return False
    return all(_DOOR.fullmatch(token) for token in tail[1:])


def _floor_value(token: str) -> float:
    word = token.rstrip(".").lower()
    return _NAMED_FLOORS[word] if word in _NAMED_FLOORS else float(word)


def danish_side(address: str) -> str | None:
    """``th``/``tv``/``mf`` (lower case) when the address ends with one, else None."""
    tokens = address.split()
    if len(tokens) < 2 or not _SIDE.fullmatch(tokens[-1]):
        return None
    return tokens[-1].rstrip(".").lower()
