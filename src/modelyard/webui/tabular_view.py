"""The tabular page: a form generated from ``POST /predict``'s request schema (one field per
column, ranges and descriptions shown, optional fields marked, known categories offered), the
answer's numbers with their units and the server's warnings, a CSV batch mode, and the bundle's
example rows when the server ships some.

Every value is judged by the server: the page shows its sentence (a 422 naming the field), never
a traceback. A different tabular project gets its own form from its own schema.
"""

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from modelyard.webui.client import ServerAnswerError
from modelyard.webui.tabular_batch import BatchError, read_table, result_csv, value_table
from modelyard.webui.tabular_examples import example_rows
from modelyard.webui.tabular_form import (
    AnswerField,
    FormField,
    SchemaError,
    answer_fields,
    answer_markdown,
    first_prediction,
    request_fields,
    row_from_values,
    rows_per_request,
    warnings_markdown,
)
from modelyard.webui.views import ViewContext

#: Narrowest a form field gets before the row wraps (a phone shows one field per line).
FIELD_MIN_WIDTH = 220
#: Pixels of an upload or download box (Gradio's default is a quarter of a screen).
FILE_HEIGHT = 110
#: Gradio's progress tracker, asked for by a handler's default argument.
PROGRESS = gr.Progress()


def build(context: ViewContext) -> None:
    """The page inside the open "Predict" tab; a schema it cannot read is a sentence on it."""
    try:
        openapi = context.openapi()
        fields = request_fields(openapi)
        answers = answer_fields(openapi, context.info)
        max_rows = rows_per_request(openapi, context.info)
    except (SchemaError, ServerAnswerError) as unreadable:
        gr.Markdown(
            f"**This server's schema gives no form:** {unreadable}", elem_id="tabular-error"
        )
        return
    gr.Markdown(
        "Fill in one row and press **Value**; fields marked *(optional)* may stay empty.",
        elem_id="tabular-intro",
    )
    inputs = _form(context, fields)
    submit = gr.Button("Value", variant="primary", elem_id="tabular-submit")
    answer = gr.Markdown(elem_id="tabular-answer")
    notes = gr.Markdown(elem_id="tabular-warnings")
    error = gr.Markdown(elem_id="tabular-error")

    def value_row(*values: Any) -> tuple[str, str, str]:
        try:
            body = context.client.predict_json(row_from_values(fields, list(values))).body
        except ServerAnswerError as refusal:
            return "", "", f"**Not valued:** {refusal}"
        prediction = first_prediction(body)
        if prediction is None:
            return "", "", "**Not valued:** the server's answer holds no prediction."
        return answer_markdown(answers, prediction), warnings_markdown(prediction), ""

    submit.click(value_row, inputs, [answer, notes, error])
    _batch(context, fields, answers, max_rows)


def _form(context: ViewContext, fields: list[FormField]) -> list[gr.components.Component]:
    """The example picker (when the server ships examples) above one input per field."""
    examples = example_rows(context.client, fields)
    picker = gr.Dropdown(
        choices=[row.label for row in examples],
        value=None,
        label="Pick an example",
        info="A row shipped with the model; it fills the form.",
        visible=bool(examples),
        elem_id="tabular-example",
    )
    with gr.Row(equal_height=False):
        inputs = [_input(field) for field in fields]
    if examples:

        def fill(label: str | None) -> list[Any]:
            chosen = next((row for row in examples if row.label == label), None)
            if chosen is None:
                return [gr.update() for _ in fields]
            return chosen.form_values(fields)

        picker.change(fill, picker, inputs)
    return inputs


def _input(field: FormField) -> gr.components.Component:
    """The widget for one field: a date picker, a choice of the known values that still takes
    free text, or a text box (numbers too: Gradio's number box shows 0 for "no value", which
    would send 0 for an optional field left empty; the range is shown, the server judges)."""
    common: dict[str, Any] = {
        "label": field.label,
        "info": field.hint or None,
        "elem_id": f"tabular-field-{field.name}",
        "min_width": FIELD_MIN_WIDTH,
    }
    if field.kind == "date":
        return gr.DateTime(include_time=False, type="string", **common)
    if field.choices:
        return gr.Dropdown(
            choices=list(field.choices), value=None, allow_custom_value=True, **common
        )
    return gr.Textbox(placeholder=field.placeholder, **common)


def _batch(
    context: ViewContext, fields: list[FormField], answers: list[AnswerField], max_rows: int
) -> None:
    """Upload a CSV of rows, get it back with the predictions added."""
    columns = ", ".join(f.name if f.required else f"{f.name} (optional)" for f in fields)
    gr.Markdown(
        f"### Batch: a CSV of rows\nColumns: {columns}. Other columns are kept as they are. "
        f"Rows go to the server {max_rows} at a time.",
        elem_id="tabular-batch-intro",
    )
    upload = gr.File(
        label="CSV of rows", file_types=[".csv"], height=FILE_HEIGHT, elem_id="tabular-batch-file"
    )
    run = gr.Button("Value the CSV", elem_id="tabular-batch-submit")
    summary = gr.Markdown(elem_id="tabular-batch-summary")
    result = gr.File(
        label="Result", interactive=False, height=FILE_HEIGHT, elem_id="tabular-batch-result"
    )

    def value_csv(path: str | None, progress: gr.Progress = PROGRESS) -> tuple[str, Any]:
        if not path:
            return "**No file:** upload a CSV first.", None
        try:
            table = read_table(Path(path).read_bytes())
            progress(0.0, desc=f"Valuing {len(table.rows)} rows")
            valued = value_table(
                context.client,
                fields,
                table,
                max_rows,
                progress=lambda done: progress(done, desc="Valuing rows"),
            )
        except (BatchError, ServerAnswerError) as refusal:
            return f"**Not valued:** {refusal}", None
        out = Path(tempfile.mkdtemp(prefix="modelyard-batch-")) / f"{Path(path).stem}-valued.csv"
        out.write_text(result_csv(table, answers, valued), encoding="utf-8")
        return valued.summary(), str(out)

    run.click(value_csv, upload, [summary, result])
