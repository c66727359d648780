"""Watch a registry alias for ``modelyard serve --follow`` and offer its versions to the workers.

One watcher per server, in the process that starts it: every ``interval_s`` it asks the
registry where ``models:/NAME@ALIAS`` points; when that is a new version, it downloads and
verifies the bundle into the registry cache (:meth:`~.store.ModelRegistry.fetch`: files,
manifest digest, registered sha256 and digest) and writes the
:class:`~modelyard.serving.model_swap.FollowState` file the workers read. A registry that does
not answer, or a version that fails verification, is logged and written into the state (the
workers show it in ``/info``), and the next look tries again; the served model is untouched.
"""

import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelyard.core.errors import ConfigError
from modelyard.registry.promotion_record import registry_block
from modelyard.registry.references import ModelReference, parse_reference
from modelyard.registry.store import ModelRegistry, RegisteredVersion, _first_line
from modelyard.serving.model_swap import FollowState
from modelyard.serving.registry_info import RegistryBlock

log = logging.getLogger("modelyard.serving")
STATE_FILE = "follow-state.json"


class AliasWatch:
    """Looks at one alias and keeps the follow-state file current."""

    def __init__(self, registry: ModelRegistry, reference: ModelReference, state_file: Path):
        if reference.alias is None:
            raise ConfigError(
                f"--follow watches an alias: use models:/{reference.name}@<alias>, not {reference}"
            )
        self.registry = registry
        self.reference = reference
        self.state_file = state_file
        self.version: str | None = None
        self.bundle: Path | None = None
        self.registry_block: RegistryBlock | None = None
        self.error: str | None = None

    def start_version(self) -> Path:
        """Resolve and fetch the alias's version now (the server starts with it); raises the
        registry's error when it cannot."""
        holder = self.registry.version(self.reference)
        bundle = self.registry.fetch(holder.reference)
        self._offer(holder, bundle.path)
        self._write()
        return bundle.path

    def _offer(self, holder: RegisteredVersion, bundle: Path) -> None:
        self.version, self.bundle = holder.version, bundle
        self.registry_block = registry_block(holder, self.reference.alias)

    def look(self) -> None:
        """One look at the alias: fetch a new version, or note why not."""
        try:
            holder = self.registry.version(self.reference)
            if holder.version != self.version:
                bundle = self.registry.fetch(holder.reference)
                log.info("%s now points at version %s", self.reference, holder.version)
                self._offer(holder, bundle.path)
            self._note(None)
        except Exception as exc:  # the registry's, MLflow's or the network's: all retried
            self._note(f"{self.reference}: {_first_line(exc)}; serving on, retrying")

    def _note(self, error: str | None) -> None:
        if error is not None:
            log.warning("%s", error)
        self.error = error
        self._write()

    def _write(self) -> None:
        FollowState(
            reference=str(self.reference),
            version=self.version,
            bundle=None if self.bundle is None else str(self.bundle.resolve()),
            error=self.error,
            checked_at=datetime.now(UTC),
            registry=self.registry_block,
        ).write(self.state_file)


@dataclass(frozen=True)
class Following:
    """What ``serve`` needs from the watcher: the bundle to start with and the state file."""

    bundle: Path
    state_file: Path
    registry: RegistryBlock | None


@contextlib.contextmanager
def follow_alias(
    reference_text: str, registry: ModelRegistry, interval_s: float
) -> Iterator[Following]:
    """Resolve the alias, then watch it in a thread until the block ends."""
    scratch = Path(tempfile.mkdtemp(prefix="modelyard-follow-"))
    stop = threading.Event()
    watch = AliasWatch(registry, parse_reference(reference_text), scratch / STATE_FILE)
    thread = threading.Thread(target=_watch, args=(watch, interval_s, stop), daemon=True)
    try:
        first = watch.start_version()
        thread.start()
        yield Following(first, watch.state_file, watch.registry_block)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=interval_s + 30)
        shutil.rmtree(scratch, ignore_errors=True)


def _watch(watch: AliasWatch, interval_s: float, stop: threading.Event) -> None:
    while not stop.wait(interval_s):
        watch.look()
