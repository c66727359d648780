"""The image page: upload, drop or pick an example image, see the server's top-k classes as a bar
chart with the most probable one named, and the image itself.

The file goes to ``POST /predict`` byte for byte (``gr.File`` hands over the uploaded file;
``gr.Image`` would decode and convert it in the UI process, so a bomb would be opened here and the
server would judge a different file). The image is shown only after the server accepted it: a
file it refused (not an image, too large, a decompression bomb) is never rendered, only its
sentence.
"""

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from modelyard.webui.client import ServerAnswerError
from modelyard.webui.views import ViewContext
from modelyard.webui.vision_answer import (
    Classified,
    Example,
    image_examples,
    media_type,
    upload_note,
)

#: The preview's height: small images (EuroSAT's are 64 x 64) are scaled up to it.
PREVIEW_HEIGHT_PX = 240
#: Small images fill the preview with their pixels kept sharp (a 64 x 64 satellite patch would
#: otherwise be a stamp) and a refusal stands out; the page's stylesheet belongs to app.py, so
#: this page's two rules live here.
PAGE_STYLE = (
    "<style>#vision-image img {width: 100%; height: 100%; object-fit: contain; "
    "image-rendering: pixelated;} "
    "#vision-error {border-left: 4px solid #c62828; padding-left: 0.75em;}</style>"
)
#: Gradio finds a handler's progress bar by this default value (one instance serves all).
PROGRESS = gr.Progress()
#: What a handler returns, in the order of the page's outputs: the error box, the top class,
#: the chart's values, the exact table, the note on what was sent and the image to show.
Shown = tuple[Any, str, dict[str, float] | None, str, str, str | None]


def build(context: ViewContext) -> None:
    """Lay the page out inside the open Blocks and wire its events."""
    details = context.info.get("details") or {}
    examples = shipped_examples(context)
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            gr.Markdown(upload_note(details), elem_id="vision-note")
            upload = gr.File(
                label="Image",
                file_types=["image"],
                type="filepath",
                elem_id="vision-upload",
            )
            picker = example_picker(examples)
            preview = gr.Image(
                label="Classified image",
                type="filepath",
                interactive=False,
                height=PREVIEW_HEIGHT_PX,
                buttons=[],
                elem_id="vision-image",
            )
        with gr.Column(min_width=300):
            error = gr.Markdown(visible=False, elem_id="vision-error")
            headline = gr.Markdown(elem_id="vision-top")
            chart = gr.Label(
                label="Most probable classes",
                num_top_classes=int(details.get("top_k") or 5),
                show_heading=False,
                elem_id="vision-chart",
            )
            table = gr.Markdown(elem_id="vision-table")
            note = gr.Markdown(elem_id="vision-sent")
    gr.HTML(PAGE_STYLE, container=False, padding=False, elem_id="vision-style")
    outputs = [error, headline, chart, table, note, preview]

    def classify_upload(path: str | None, progress: gr.Progress = PROGRESS) -> Shown:
        if not path:
            return cleared()
        progress(0.2, desc="Classifying on the server")
        return classify(context, Path(path))

    upload.upload(classify_upload, inputs=upload, outputs=outputs)
    upload.clear(cleared, outputs=outputs)
    if picker is not None:
        choice, button = picker
        folder = Path(tempfile.mkdtemp(prefix="modelyard-vision-examples-"))

        def classify_example(name: str | None, progress: gr.Progress = PROGRESS) -> Shown:
            if not name:
                return failed("Pick an example first.")
            progress(0.1, desc="Fetching the example")
            try:
                path = fetch_example(context, name, folder)
            except ServerAnswerError as refused:
                return failed(str(refused))
            progress(0.5, desc="Classifying on the server")
            return classify(context, path)

        button.click(classify_example, inputs=choice, outputs=outputs)


def shipped_examples(context: ViewContext) -> list[Example]:
    """The bundle's example images; none when the server has no ``/examples`` (older servers
    answer 404) or cannot list them: the picker is then left out, without an error."""
    try:
        return image_examples(context.client.get_json("/examples"))
    except ServerAnswerError:
        return []


def example_picker(examples: list[Example]) -> tuple[gr.Dropdown, gr.Button] | None:
    if not examples:
        return None
    choices = [example.choice() for example in examples]
    with gr.Group():
        choice = gr.Dropdown(
            choices=choices,
            value=choices[0][1],
            label="Or pick an example shipped with the model",
            elem_id="vision-examples",
        )
        button = gr.Button("Classify the example", elem_id="vision-example-button")
    return choice, button


def fetch_example(context: ViewContext, name: str, folder: Path) -> Path:
    """Download one shipped example into ``folder`` under its own name (the picker only offers
    plain names, see :func:`.vision_answer.is_plain_name`)."""
    path = folder / Path(name).name
    path.write_bytes(context.client.get_bytes(f"/examples/{path.name}"))
    return path


def classify(context: ViewContext, path: Path) -> Shown:
    """Send the file as it is and show the answer, or the server's sentence."""
    try:
        content = path.read_bytes()
    except OSError as error:
        return failed(f"Cannot read the uploaded file ({error.strerror or error}).")
    try:
        answer = context.client.predict_file(path.name, content, media_type(path.name))
        result = Classified.from_answer(answer.body, path.name, len(content))
    except (ServerAnswerError, ValueError) as refused:
        return failed(str(refused))
    return (
        gr.Markdown(visible=False, value=""),
        result.headline(),
        result.chart(),
        result.table(),
        result.sent_note(),
        str(path),
    )


def failed(sentence: str) -> Shown:
    """The error box with the sentence; the previous result is cleared so it is not mistaken
    for this file's."""
    return (
        gr.Markdown(visible=True, value=f"**Not classified:** {sentence}"),
        "",
        None,
        "",
        "",
        None,
    )


def cleared() -> Shown:
    return (gr.Markdown(visible=False, value=""), "", None, "", "", None)
