"""The metric names a PromQL expression reads, for the check that the alert rules and the
dashboard only query series that exist (tests/test_monitoring_ops.py).

Not a PromQL parser: promtool checks the syntax; this finds the selectors' names once strings,
label matchers, grouping clauses and ranges are out of the way. Names given as a ``__name__``
matcher are returned apart: exact ones as names, ``=~`` ones as patterns.
"""

import re
from dataclasses import dataclass, field

_NAME_MATCHER = re.compile(r'__name__\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_BRACES = re.compile(r"\{[^}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
# an identifier not glued to a number, a variable or another identifier
_IDENTIFIER = re.compile(r"(?<![\w.$:])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
     "group_right", "inf", "nan", "atan2"}
)  # fmt: skip


@dataclass
class Selected:
    names: set[str] = field(default_factory=set)
    patterns: set[str] = field(default_factory=set)


def selected(expr: str) -> Selected:
    """The metric names (and ``__name__=~`` patterns) ``expr`` selects."""
    found = Selected()
    for operator, value in _NAME_MATCHER.findall(expr):
        (found.patterns if operator == "=~" else found.names).add(value)
    text = _STRING.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an aggregation, or an operator word
        found.names.add(word)
    return found
