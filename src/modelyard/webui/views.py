"""Which page a served model gets: one view module per project family, found by ``/info``'s
``task``, each with ``build(context)`` that lays out its components inside the open Gradio
block. A new project of an existing family therefore gets its UI with no UI code."""

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelyard.webui.client import ServerClient

#: ``/info``'s ``task`` -> the module holding that family's page.
FAMILY_VIEWS = {
    "nilm": "modelyard.webui.nilm_view",
    "tabular": "modelyard.webui.tabular_view",
    "vision": "modelyard.webui.vision_view",
}
MODEL_VIEW = "modelyard.webui.model_view"


@dataclass
class ViewContext:
    """What every view is built from: the client, ``/info`` as read at start, the OpenAPI schema
    (read once, on first use) and the monitoring service's URL when one was given."""

    client: ServerClient
    info: dict[str, Any]
    monitor_url: str | None = None
    _openapi: dict[str, Any] | None = field(default=None, repr=False)

    def openapi(self) -> dict[str, Any]:
        if self._openapi is None:
            self._openapi = self.client.openapi()
        return self._openapi


def view_builder(module_name: str) -> Callable[[ViewContext], None]:
    builder: Callable[[ViewContext], None] = importlib.import_module(module_name).build
    return builder


def family_view(task: str) -> Callable[[ViewContext], None]:
    """The ``build`` function of the family's page; a clear error for a task without one."""
    try:
        return view_builder(FAMILY_VIEWS[task])
    except KeyError:
        known = ", ".join(sorted(FAMILY_VIEWS))
        raise ValueError(f"no UI for task {task!r} (known: {known})") from None
