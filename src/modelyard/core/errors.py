"""User-facing errors.

Anything raised as a :class:`ModelyardError` is a problem with the user's input (a path, a config
value, a file) rather than a bug; the CLI prints its message without a traceback and exits 2.
"""

from pydantic import ValidationError


class ModelyardError(Exception):
    """An error whose message is meant for the user, not a bug report."""


class ConfigError(ModelyardError):
    """A configuration value is missing, malformed or out of range."""


class DataError(ModelyardError):
    """A data source is missing, corrupt or does not have the expected layout."""


class BundleError(ModelyardError):
    """A model bundle is missing, incomplete or fails its integrity check."""


def first_error(exc: Exception, prefix: str = "") -> str:
    """A pydantic error as ``prefix.field: message (got value)`` (its first error) in one line,
    else the exception's first line."""
    if not isinstance(exc, ValidationError):
        return str(exc).splitlines()[0]
    first = exc.errors()[0]
    where = ".".join(p for p in (prefix, *(str(part) for part in first["loc"])) if p)
    return f"{where + ': ' if where else ''}{first['msg']} (got {first['input']!r})"
