"""Replace the served model while the worker keeps answering (``serve --follow``).

Who looks at the registry: ``modelyard serve --follow`` starts one watcher in the server's main
process (:mod:`modelyard.registry.alias_watch`). When the alias moves it downloads and verifies
the new version into the registry cache and writes a small :class:`FollowState` file; every
worker (one or several uvicorn processes) reads that file in a thread of its own
(:class:`Follower`), so the registry is asked once per server, not once per worker, and no
worker blocks its event loop or needs the MLflow client.

How a worker swaps (:class:`ModelSwitch`): the new bundle is verified again with the server's
signature policy, opened, its adapter built and warmed up beside the old model, and checked
against what the built app serves (:func:`~.served_model.contract_change`). Then one reference
assignment, made on the event loop, makes it current. Each request reads that reference once, on
the loop, when it reaches the task's routes (:class:`ServedRoutes`), and is answered entirely by
that model, whose version the prediction log records. The old model keeps answering the requests
it already took; once none is left, its micro-batcher is closed. A version that cannot be loaded
or would change the contract is refused: the old model keeps serving, the refusal is logged, counted
(``modelyard_model_swaps_total{result="refused"}``) and shown in ``/info``'s ``follow``.
"""

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from modelyard.serving.context import current_request
from modelyard.serving.registry_info import RegistryBlock
from modelyard.serving.served_model import ServedModel, contract_change

log = logging.getLogger("modelyard.serving")

#: Longest wait between a worker's looks at the follow-state file (it is a local file: cheap).
STATE_CHECK_S = 0.5
#: Longest a swap waits for the event loop to take the new reference.
ASSIGN_TIMEOUT_S = 10.0


class FollowState(BaseModel):
    """What the watcher of a registry alias tells the workers (a JSON file it replaces whole)."""

    reference: str = Field(description="The followed alias, models:/NAME@ALIAS.")
    version: str | None = Field(description="Registry version whose bundle is offered.")
    bundle: str | None = Field(description="Verified bundle directory of that version.")
    error: str | None = Field(default=None, description="The watcher's latest problem, if any.")
    checked_at: datetime
    registry: RegistryBlock | None = Field(
        default=None, description="/info's registry block of the version offered."
    )

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically: a reader sees the old state or the new, never half."""
        scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        scratch.write_text(self.model_dump_json(), encoding="utf-8")
        scratch.replace(path)

    @classmethod
    def read(cls, path: Path) -> "FollowState":
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            raise OSError(f"cannot read the follow state {path}: {exc}") from exc


class FollowStatus(BaseModel):
    """``/info``'s ``follow``: where this worker stands with the followed alias."""

    reference: str
    registry_version: str | None = Field(description="Version the alias pointed at, last seen.")
    swaps: int = Field(description="Versions this worker has switched to since it started.")
    error: str | None = Field(
        description="Latest problem: registry unreachable, a version refused (the served "
        "model kept serving); None once a later look succeeds."
    )
    checked_at: datetime | None


class ModelSwitch:
    """The worker's current :class:`ServedModel`, replaced by one assignment on the event loop."""

    def __init__(self, first: ServedModel) -> None:
        self.current = first
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop serving requests: swaps are made on it (see :meth:`swap`)."""
        self._loop = loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer with the model that is current when the request reaches its route."""
        served = self.current  # read and counted with no await between: see swap()
        served.in_flight.count += 1
        context = current_request.get()
        if context is not None:
            context.model_version = served.version
        try:
            await served.router(scope, receive, send)
        finally:
            served.in_flight.count -= 1

    def swap(self, new: ServedModel) -> ServedModel:
        """Make ``new`` current and return the model it replaced.

        The assignment runs on the event loop, so it can never fall between a request's reading
        of ``current`` and its count in ``in_flight``: once this returns, every request of the
        old model is counted there."""
        old = self.current

        def assign() -> None:
            self.current = new

        if self._loop is None or not self._loop.is_running():
            assign()
            return old
        done = threading.Event()

        def assign_and_signal() -> None:
            assign()
            done.set()

        self._loop.call_soon_threadsafe(assign_and_signal)
        if not done.wait(ASSIGN_TIMEOUT_S):
            raise TimeoutError("the event loop did not take the new model in time")
        return old

    @staticmethod
    def retire(old: ServedModel, timeout_s: float) -> None:
        """Close ``old`` once the requests it took are answered (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while old.in_flight.count > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        old.close()


class ServedRoutes(BaseRoute):
    """The task's routes, matched and answered by the switch's current model.

    Placed before the routes the app was built with (which stay for the OpenAPI schema: a swap
    never changes it, see :func:`~.served_model.contract_change`)."""

    def __init__(self, switch: ModelSwitch) -> None:
        self.switch = switch

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        found = Match.NONE
        for route in self.switch.current.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return Match.FULL, {}
            if match is Match.PARTIAL:
                found = Match.PARTIAL  # the path is served, not with this method: its 405
        return found, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.switch(scope, receive, send)


class Follower:
    """A worker's thread that reads the follow state and swaps to the version it offers.

    ``load`` opens, checks and warms up a bundle directory (the server's own way, raising on a
    bad bundle); ``on_swap`` updates what reports the served model (metrics)."""

    def __init__(
        self,
        state_file: Path,
        switch: ModelSwitch,
        load: Callable[[Path], ServedModel],
        on_swap: Callable[[ServedModel, str], None],
        interval_s: float,
        drain_timeout_s: float,
    ) -> None:
        self.state_file = state_file
        self.switch = switch
        self.load = load
        self.on_swap = on_swap
        self.interval_s = min(interval_s, STATE_CHECK_S)
        self.drain_timeout_s = drain_timeout_s
        self.status = FollowStatus(
            reference="", registry_version=None, swaps=0, error=None, checked_at=None
        )
        #: /info's registry block of the version offered last (shown once it is served)
        self.registry: RegistryBlock | None = None
        self._refused: str | None = None  # the bundle last refused: not tried again
        self._refusal: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.drain_timeout_s + ASSIGN_TIMEOUT_S)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as exc:  # the thread must outlive any single failure
                log.error("following the registry alias failed: %s", exc)

    def check(self) -> None:
        """One look at the follow state; swaps when it offers another bundle."""
        try:
            state = FollowState.read(self.state_file)
        except OSError as exc:
            self._report(error=str(exc))
            return
        error = state.error
        self.registry = state.registry
        if state.bundle is not None:
            offered = Path(state.bundle).resolve()
            if str(offered) == self._refused:
                error = error or self._refusal  # the watcher's news first
            elif offered != self.switch.current.bundle.path.resolve():
                error = self._switch_to(offered, state.version or "?") or error
        self._report(
            reference=state.reference,
            registry_version=state.version,
            error=error,
            checked_at=state.checked_at,
        )

    def _switch_to(self, path: Path, version: str) -> str | None:
        """Load, warm and swap to ``path``; the refusal's message when it cannot be served."""
        old = self.switch.current
        try:
            new = self.load(path)
        except Exception as exc:
            return self._refuse(path, version, f"cannot be loaded: {exc}")
        change = contract_change(old, new)
        if change is not None:
            new.close()
            return self._refuse(path, version, f"{change}; restart the server to serve it")
        try:
            self.switch.swap(new)
        except Exception:
            new.close()
            raise
        self.on_swap(new, "swapped")
        self._report(swaps=self.status.swaps + 1)
        log.info(
            "now serving %s %s (registry version %s) instead of %s",
            new.name,
            new.version,
            version,
            old.version,
        )
        self.switch.retire(old, self.drain_timeout_s)
        return None

    def _refuse(self, path: Path, version: str, why: str) -> str:
        self._refused = str(path)
        served = self.switch.current.version
        self._refusal = f"registry version {version} refused ({why}); still serving {served}"
        log.error(self._refusal)
        self.on_swap(self.switch.current, "refused")
        return self._refusal

    def _report(self, **changes: Any) -> None:
        """Replace the status whole: ``/info`` reads it from the event loop."""
        self.status = self.status.model_copy(update=changes)
