"""The tracker interface the stages log through, and the helpers every backend shares.

A tracked run spans the stages of one training run: ``train`` starts it and records its id in
the run directory (``tracking.json``); ``evaluate`` and ``export`` of that run resume it, so the
evaluation metrics, plots and bundle land on the same tracked run as the training curves.
"""

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelyard.core.errors import ModelyardError

TRACKING_FILE = "tracking.json"
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


class TrackingError(ModelyardError):
    """The tracking backend is unavailable or refused a request."""


@dataclass(frozen=True)
class TrackedRun:
    """Where a run is tracked: enough to resume it from another process."""

    backend: str
    run_id: str
    location: str
    experiment: str

    def save(self, run_dir: Path) -> None:
        (run_dir / TRACKING_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, run_dir: Path) -> "TrackedRun | None":
        path = run_dir / TRACKING_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise TrackingError(f"{path} is not a modelyard tracking record: {exc}") from exc


class Tracker(ABC):
    """What the stages need from an experiment tracker."""

    backend = "none"

    @property
    def run(self) -> TrackedRun | None:
        """The tracked run, or None when nothing is tracked."""
        return None

    @abstractmethod
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    @abstractmethod
    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """Upload a file or a whole directory (under ``folder`` in the run's artifacts)."""

    @abstractmethod
    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    @abstractmethod
    def finish(self, failed: bool = False) -> None: ...


class NullTracker(Tracker):
    """``tracking=none``: every call is accepted and nothing is recorded."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists stay whole)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_metrics(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested metrics document, keyed by their path (``a/b/c``)."""
    found: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(numeric_metrics(value, f"{name}/"))
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        ):
            found[safe_key(name)] = float(value)
    return found


def safe_key(name: str) -> str:
    """A metric or parameter name every backend accepts."""
    return _UNSAFE_KEY.sub("_", name)
