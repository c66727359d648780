"""Turn what a user passes to ``serve``/``predict`` (a path or ``models:/...``) into a bundle path.

Kept free of Hydra so that the serving command line stays light: the registry location comes
from ``--registry-uri``, else ``MLFLOW_REGISTRY_URI``/``MLFLOW_TRACKING_URI``, else the embedded
store in the working directory (``MODELYARD_HOME``, default ``.modelyard``) — the same defaults
as the configuration's ``registry`` section.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.core.runs import default_workdir
from modelyard.registry.references import is_reference, parse_reference

if TYPE_CHECKING:
    from modelyard.registry.store import ModelRegistry
    from modelyard.serving.registry_info import RegistryBlock


def default_registry_uri() -> str:
    for name in ("MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI"):
        if os.environ.get(name):
            return os.environ[name]
    return f"sqlite:///{default_workdir()}/mlflow.db"


def bundle_path(text: str, registry_uri: str | None = None) -> Path:
    """A local bundle directory for ``text``; registry versions are downloaded and verified."""
    if not is_reference(text):
        return Path(text)
    return serving_registry(registry_uri).fetch(parse_reference(text)).path


def served_bundle(
    text: str, registry_uri: str | None = None
) -> tuple[Path, "RegistryBlock | None"]:
    """What ``serve`` serves for ``text``: the bundle directory and, for a registry reference,
    ``/info``'s registry block (the version the reference names now, and its promotion)."""
    if not is_reference(text):
        return Path(text), None
    from modelyard.registry.promotion_record import registry_block

    registry = serving_registry(registry_uri)
    reference = parse_reference(text)
    held = registry.version(reference)  # then that version: the alias may move meanwhile
    return registry.fetch(held.reference).path, registry_block(held, reference.alias)


def serving_registry(registry_uri: str | None = None) -> "ModelRegistry":
    """The registry ``serve`` and ``predict`` read (``registry_uri`` or the default), with the
    download cache in the working directory."""
    from modelyard.registry.store import ModelRegistry

    return ModelRegistry(
        registry_uri or default_registry_uri(), default_workdir() / "registry-cache"
    )
