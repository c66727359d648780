"""User-facing errors.

Anything raised as a :class:`ModelyardError` is a problem with the user's input (a path, a config
value, a file) rather than a bug; the CLI prints its message without a traceback and exits 2.
"""


class ModelyardError(Exception):
    """An error whose message is meant for the user, not a bug report."""


class ConfigError(ModelyardError):
    """A configuration value is missing, malformed or out of range."""


class DataError(ModelyardError):
    """A data source is missing, corrupt or does not have the expected layout."""


class BundleError(ModelyardError):
    """A model bundle is missing, incomplete or fails its integrity check."""
