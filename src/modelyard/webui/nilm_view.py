"""The NILM page: a household's mains readings in (an uploaded CSV or a sample day shipped with
the bundle), each appliance's estimated power out as a zoomable chart over the mains, with the
period's energy per appliance and, when the CSV carries measured appliance columns, truth beside
estimate. Everything comes from ``/info``, ``/examples`` and ``/predict``; the figures are
computed by :mod:`.nilm_energy` and laid out by :mod:`.nilm_display`.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr

from modelyard.webui.client import ServerAnswerError, ServerClient
from modelyard.webui.nilm_display import (
    chart_frame,
    chart_positions,
    colour_map,
    edge_sentence,
    energy_html,
    legend,
    span_of,
)
from modelyard.webui.nilm_energy import NilmAnswerError, NilmPrediction, summarise
from modelyard.webui.nilm_series import (
    MAINS_COLUMNS,
    MainsTable,
    NilmInputError,
    parse_mains_csv,
)
from modelyard.webui.views import ViewContext

EDGE_CHOICES = [
    ("Every reading (edge readings marked)", "pad"),
    ("Only readings with a full window", "valid"),
]


@dataclass(frozen=True)
class NilmPage:
    """What the page's handlers need from ``/info``: the appliances and the sampling interval."""

    client: ServerClient
    appliances: tuple[str, ...]
    interval_s: int | None

    @classmethod
    def from_context(cls, context: ViewContext) -> "NilmPage":
        details = context.info.get("details") or {}
        interval = details.get("interval_s")
        return cls(
            client=context.client,
            appliances=tuple(str(name) for name in details.get("appliances", [])),
            interval_s=interval if isinstance(interval, int) else None,
        )

    def load(self, upload: str | None, example: str | None) -> tuple[str, bytes]:
        """The chosen CSV's name and bytes: the upload, else the picked sample day."""
        if upload:
            path = Path(upload)
            return path.name, path.read_bytes()
        if example:
            return example, self.client.get_bytes(f"/examples/{quote(example)}")
        raise NilmInputError("Upload a CSV of mains readings or pick a sample day first.")

    def estimate(self, upload: str | None, example: str | None, edges: str) -> tuple[Any, ...]:
        """The click handler: (message, chart, energy table); any failure is a sentence."""
        started = time.perf_counter()
        try:
            name, content = self.load(upload, example)
            table = parse_mains_csv(name, content, self.appliances)
            answer = self.client.predict_json(table.request(edges))
            prediction = NilmPrediction.from_answer(answer.body)
        except (NilmInputError, NilmAnswerError, ServerAnswerError) as error:
            return failure(str(error))
        summary = summarise(prediction, table.mains_w, table.truth_w)
        elapsed_ms = (time.perf_counter() - started) * 1000
        lines = [
            f"Estimated {prediction.readings} readings ({summary.hours:g} hours) of "
            f"{name} in {elapsed_ms:.0f} ms.",
            edge_sentence(table, prediction),
        ]
        if table.truth_w:
            lines.append(f"Measured columns compared: {', '.join(sorted(table.truth_w))}.")
        if table.ignored:
            lines.append(f"Columns not used: {', '.join(table.ignored)}.")
        shown = Shown(table, prediction)
        energy = gr.HTML(energy_html(summary), visible=True)
        key = gr.HTML(shown.legend_html(), visible=True)
        return "\n\n".join(lines), shown.chart(), key, energy, shown

    def zoom(self, shown: "Shown | None", selection: gr.SelectData) -> Any:
        """A dragged x range: the readings inside it, redrawn in more detail."""
        if shown is None:
            return gr.LinePlot()
        low, high = (float(value) for value in selection.index)
        return shown.chart(span_of(shown.positions(), low, high), [low, high])

    def unzoom(self, shown: "Shown | None") -> Any:
        return gr.LinePlot() if shown is None else shown.chart()


@dataclass(frozen=True)
class Shown:
    """The readings and prediction on the chart, kept (per browser tab) for zooming."""

    table: MainsTable
    prediction: NilmPrediction

    def legend_html(self) -> str:
        frame, _ = chart_frame(self.table, self.prediction)
        return legend(frame, colour_map(tuple(self.prediction.appliances_w)))

    def positions(self) -> list[float]:
        return chart_positions(self.table, self.prediction.interval_s)

    def whole_period(self) -> list[float | None]:
        """The x limits of the whole upload (no limits would leave the last zoom in place)."""
        positions = self.positions()
        return [positions[0], positions[-1]]

    def chart(
        self, span: tuple[int, int] | None = None, x_lim: list[float | None] | None = None
    ) -> Any:
        frame, x_name = chart_frame(self.table, self.prediction, span)
        colours = colour_map(tuple(self.prediction.appliances_w))
        return gr.LinePlot(
            value=frame,
            x=x_name,
            x_title="time" if x_name == "time" else "hours from the first reading",
            color_map=colours,
            colors_in_legend=[],  # the chart's own legend is one clipped row: see legend_html
            x_lim=x_lim or self.whole_period(),
            visible=True,
        )


def failure(sentence: str) -> tuple[Any, ...]:
    empty = gr.LinePlot(value=None)
    hidden = gr.HTML("", visible=False)
    return f"**{sentence}**", empty, hidden, hidden, None


def sample_days(client: ServerClient) -> list[str]:
    """The CSV examples the bundle ships (``GET /examples``); none from an older server."""
    try:
        body = client.get_json("/examples")
    except ServerAnswerError:
        return []
    return csv_example_names(body)


def csv_example_names(body: Any) -> list[str]:
    """Names of the CSV entries of a ``/examples`` answer; anything malformed counts as none."""
    entries = body.get("examples") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return []
    return [
        str(entry["name"])
        for entry in entries
        if isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and (entry.get("media_type") == "text/csv" or entry["name"].lower().endswith(".csv"))
    ]


def instructions(page: NilmPage) -> str:
    every = (
        f"one reading every {page.interval_s} s" if page.interval_s else "one reading per interval"
    )
    measured = ", ".join(page.appliances) or "the model's appliances"
    mains = " or ".join(f"`{name}`" for name in MAINS_COLUMNS[:2])
    return (
        f"Upload a CSV of whole-house mains power in watts: a {mains} column, {every}, "
        f"an optional `Time` column and, to compare, optional measured columns named "
        f"{measured}. Drag across the chart to zoom in; double-click to zoom out."
    )


def build(context: ViewContext) -> None:
    """Lay out the NILM page inside the open Gradio block."""
    page = NilmPage.from_context(context)
    gr.Markdown(instructions(page), elem_id="nilm-help")
    with gr.Row(equal_height=False):
        upload = gr.File(label="Mains CSV", elem_id="nilm-upload", min_width=240)
        with gr.Column(min_width=240):
            samples = sample_days(page.client)
            example = gr.Dropdown(
                choices=samples,
                value=None,
                label="…or a sample day shipped with the model",
                elem_id="nilm-example",
                visible=bool(samples),
            )
            edges = gr.Radio(EDGE_CHOICES, value="pad", label="Edges", elem_id="nilm-edges")
            run = gr.Button("Estimate appliances", variant="primary", elem_id="nilm-run")
    message = gr.Markdown(elem_id="nilm-message")
    chart = gr.LinePlot(
        x="time",
        y="power_w",
        color="series",
        y_title="power (W)",
        color_title="series",
        tooltip="none",
        label="Mains and estimated appliance power",
        elem_id="nilm-chart",
    )
    key = gr.HTML(elem_id="nilm-key", visible=False)
    energy = gr.HTML(elem_id="nilm-energy", visible=False)
    shown = gr.State(None)
    # the last choice wins: an upload clears the picked sample and a pick clears the upload
    upload.upload(lambda: None, None, example)
    example.input(lambda: None, None, upload)
    run.click(page.estimate, [upload, example, edges], [message, chart, key, energy, shown])
    chart.select(page.zoom, shown, chart)
    chart.double_click(page.unzoom, shown, chart)
