"""The page: a header naming what is served, the family's prediction tab and the model tab,
assembled from :mod:`.views` for whatever ``/info`` says the server serves."""

from collections.abc import Callable
from typing import Any

import gradio as gr

from modelyard.webui.views import FAMILY_VIEWS, MODEL_VIEW, ViewContext, family_view, view_builder

#: System fonts only: the page must not wait on a font download (the server may be offline).
THEME = gr.themes.Default(
    font=["system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "Menlo", "monospace"],
)
PAGE_TITLE = "modelyard"
#: Gradio keeps every upload in its cache; files older than this are deleted, checked as often,
#: so a UI that runs for months does not fill its disk with CSVs and photos.
UPLOAD_CACHE_S = 3600
#: Wide tables (metrics per class, per appliance) scroll inside their box instead of widening
#: the page on a phone; long digests wrap.
CSS = """
.prose table { display: block; overflow-x: auto; max-width: 100%; }
.prose code { overflow-wrap: anywhere; }
.prose td:first-child, .prose th { white-space: nowrap; }
@media (max-width: 480px) { .prose td, .prose th { padding: 4px 6px !important; } }
"""


def build_app(context: ViewContext) -> gr.Blocks:
    """The whole page for the served model described by ``context.info``."""
    info = context.info
    build_family = predict_view(str(info["task"]))
    blocks: gr.Blocks
    title = f"{PAGE_TITLE}: {info.get('project', '')}"
    cache = (UPLOAD_CACHE_S, UPLOAD_CACHE_S)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=cache) as blocks:
        gr.Markdown(header(info), elem_id="model-header")
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                build_family(context)
            with gr.Tab("Model", id="model"):
                view_builder(MODEL_VIEW)(context)
    return blocks


def predict_view(task: str) -> Callable[[ViewContext], None]:
    """The family's view, or a one-sentence notice when this install has no module for it (a
    UI older than the family); any other import failure is a real error and propagates."""
    try:
        return family_view(task)
    except ModuleNotFoundError as error:
        if error.name != FAMILY_VIEWS[task]:
            raise
    notice = f"This version of the modelyard UI has no prediction page for {task} models yet."

    def missing(_: ViewContext) -> None:
        gr.Markdown(notice, elem_id="predict-missing")

    return missing


def header(info: dict[str, Any]) -> str:
    """One line: project, model name and version (the sha256 lives in the model tab)."""
    project = info.get("project", "?")
    return f"## {project} · {info.get('name', '?')} · version {info.get('version', '?')}"
