"""Registry references: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

This module imports nothing heavy: the server's command line parses references with it.
"""

import re
from dataclasses import dataclass

from modelyard.core.errors import ModelyardError

PREFIX = "models:/"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_PATTERN = re.compile(rf"^models:/(?P<name>{_NAME})(?:@(?P<alias>{_NAME})|/(?P<version>\d+))$")


class ReferenceError(ModelyardError):
    """A registry reference that cannot be parsed."""


@dataclass(frozen=True)
class ModelReference:
    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        suffix = f"@{self.alias}" if self.alias else f"/{self.version}"
        return f"{PREFIX}{self.name}{suffix}"


def is_reference(text: str) -> bool:
    return text.startswith(PREFIX)


def parse_reference(text: str) -> ModelReference:
    match = _PATTERN.match(text.strip())
    if match is None:
        raise ReferenceError(
            f"bad registry reference {text!r}: use models:/<name>@<alias> "
            "(e.g. models:/nilm@production) or models:/<name>/<version>"
        )
    return ModelReference(match["name"], match["alias"], match["version"])
