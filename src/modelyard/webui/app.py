"""The page: a header naming what is served, the family's prediction tab and the model tab,
assembled from :mod:`.views` for whatever ``/info`` says the server serves."""

from typing import Any

import gradio as gr

from modelyard.webui.views import MODEL_VIEW, ViewContext, family_view, view_builder

#: System fonts only: the page must not wait on a font download (the server may be offline).
THEME = gr.themes.Default(
    font=["system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "Menlo", "monospace"],
)
PAGE_TITLE = "modelyard"


def build_app(context: ViewContext) -> gr.Blocks:
    """The whole page for the served model described by ``context.info``."""
    info = context.info
    build_family = family_view(str(info["task"]))
    blocks: gr.Blocks
    with gr.Blocks(title=f"{PAGE_TITLE}: {info.get('project', '')}") as blocks:
        gr.Markdown(header(info), elem_id="model-header")
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                build_family(context)
            with gr.Tab("Model", id="model"):
                view_builder(MODEL_VIEW)(context)
    return blocks


def header(info: dict[str, Any]) -> str:
    """One line: project, model name and version (the sha256 lives in the model tab)."""
    project = info.get("project", "?")
    return f"## {project} · {info.get('name', '?')} · version {info.get('version', '?')}"
