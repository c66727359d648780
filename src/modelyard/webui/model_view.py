"""The model tab: what is served (name, version, sha256, quantized, integrity), the metrics it was
evaluated with, the gates it passed when registered, and the monitor's latest drift report.

Every value is read when the page loads and again on "Refresh", never only at UI start: under
``serve --follow`` a promoted version replaces the served one while the UI keeps running.
"""

import gradio as gr

from modelyard.webui.client import ServerAnswerError, ServerClient
from modelyard.webui.metrics_table import metrics_markdown
from modelyard.webui.model_text import (
    NO_MONITOR,
    drift_markdown,
    identity_markdown,
    registry_markdown,
)
from modelyard.webui.views import ViewContext

#: What starts a sentence saying why something is not shown.
ERROR_MARK = "⚠️"
#: Seconds the tab waits for the monitoring service (it answers from memory).
MONITOR_TIMEOUT_S = 10.0


def build(context: ViewContext) -> None:
    """The tab's components inside the open Blocks/Tab; values read on each page load."""
    client = context.client
    gr.Markdown("### Served model")
    identity = gr.Markdown(lambda: read_facts(client)[0], elem_id="model-identity")
    refresh = gr.Button("Refresh", elem_id="model-refresh", size="sm")
    gr.Markdown("### Evaluation metrics")
    metrics = gr.Markdown(lambda: read_facts(client)[1], elem_id="model-metrics")
    gr.Markdown("### Registry")
    registry = gr.Markdown(lambda: read_facts(client)[2], elem_id="model-registry")
    refresh.click(lambda: read_facts(client), outputs=[identity, metrics, registry])
    _drift_section(context.monitor_url)


def read_facts(client: ServerClient) -> tuple[str, str, str]:
    """Identity, metrics and registry as Markdown from a fresh ``/info``; when the server does
    not answer, the sentence why in place of the identity."""
    try:
        info = client.info()
    except ServerAnswerError as error:
        return f"{ERROR_MARK} {error}", "", ""
    return (
        identity_markdown(info, served_quantized(client)),
        metrics_markdown(info.get("metrics") or {}),
        registry_markdown(info),
    )


def _drift_section(monitor_url: str | None) -> None:
    gr.Markdown("### Drift")
    if monitor_url is None:
        gr.Markdown(NO_MONITOR, elem_id="model-drift")
        return
    monitor = ServerClient(monitor_url, timeout_s=MONITOR_TIMEOUT_S)

    def drift() -> str:
        return drift_text(monitor)

    report = gr.Markdown(drift, elem_id="model-drift")
    button = gr.Button("Refresh drift report", elem_id="model-drift-refresh", size="sm")
    button.click(drift, outputs=[report])


def drift_text(monitor: ServerClient) -> str:
    """The latest verdict as Markdown, or a sentence saying why there is none."""
    try:
        verdict = monitor.get_json("/drift")
    except ServerAnswerError as error:
        return f"{ERROR_MARK} The monitoring service at {monitor.base_url} gave no report: {error}"
    if not isinstance(verdict, dict):
        return f"{ERROR_MARK} The monitoring service at {monitor.base_url} sent no report."
    return drift_markdown(verdict, f"{monitor.base_url}/")


def served_quantized(client: ServerClient) -> bool | None:
    """``/ready``'s ``quantized`` (``/info`` describes the bundle, not the file served); None
    while the server is not ready."""
    try:
        ready = client.get_json("/ready")
    except ServerAnswerError:
        return None
    value = ready.get("quantized") if isinstance(ready, dict) else None
    return value if isinstance(value, bool) else None
