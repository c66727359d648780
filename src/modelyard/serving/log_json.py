"""JSON text for the prediction log that cannot fail and cannot grow without bound.

The writer thread shares the GIL with the requests, so the common case is one ``orjson.dumps``
call. Only when orjson refuses a value (an integer beyond 64 bits, a lone surrogate in a string,
a cycle, an object whose ``str`` raises) does a slower walk replace what it cannot write by a
safe representation: such a record is stored, never blocks the others and never crashes the
spool. Text over :data:`MAX_JSON_CHARS` is replaced by a marked head of itself, so one huge
request cannot make a huge row.
"""

import math
from typing import Any

import orjson

#: Longest JSON text kept for one value (inputs or outputs of a record, a spooled line's part).
MAX_JSON_CHARS = 1_000_000
#: Longest string kept by the fallback walk.
MAX_STRING_CHARS = 10_000
#: Deepest nesting kept by the fallback walk (cycles end here too).
MAX_DEPTH = 32
_HEAD_CHARS = 2_000
# no OPT_NON_STR_KEYS: it costs the common case half as much again; such keys take the fallback
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def to_json(value: Any) -> str:
    """JSON text of ``value``; values orjson refuses are written as text, never an error."""
    try:
        text = orjson.dumps(value, default=_text, option=_OPTIONS).decode()
    except (TypeError, ValueError, RecursionError):  # orjson.JSONEncodeError is a TypeError
        text = orjson.dumps(safe_value(value), option=_OPTIONS).decode()
    if len(text) > MAX_JSON_CHARS:
        head = {"truncated": True, "chars": len(text), "head": text[:_HEAD_CHARS]}
        return orjson.dumps(head).decode()
    return text


def safe_value(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that orjson always accepts: big integers and odd objects become text,
    non-finite floats ``null``, strings valid UTF-8 of bounded length, nesting bounded."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return safe_text(value)
    if depth >= MAX_DEPTH:
        return "<nested too deeply>"
    if isinstance(value, dict):
        return {safe_text(_text(k)): safe_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [safe_value(v, depth + 1) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        try:
            return safe_value(value.tolist(), depth + 1)
        except Exception:  # any failure still yields a safe value
            pass
    return safe_text(_text(value))


def safe_text(text: str, limit: int = MAX_STRING_CHARS) -> str:
    """``text`` as valid UTF-8 (lone surrogates replaced), at most ``limit`` characters."""
    cleaned = text.encode("utf-8", "replace").decode("utf-8")
    if len(cleaned) > limit:
        return f"{cleaned[:limit]}...[{len(cleaned) - limit} more characters]"
    return cleaned


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # an object whose __str__ fails still gets a name
        return f"<unprintable {type(value).__name__}>"
