"""How the NILM page shows a prediction: the chart's long table (one row per reading and
series), the energy table as HTML (every figure also in a ``data-value`` attribute, so a test or
a script reads the exact number the rounded text shows) and the sentence about edge readings."""

import bisect
import html
import itertools
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from modelyard.webui.nilm_energy import EnergySummary, NilmPrediction
from modelyard.webui.nilm_series import MainsTable

MAINS_SERIES = "mains"
#: Points per line in the chart; more only slow the browser (a day at 1 min is 1,440 a line).
MAX_POINTS_PER_SERIES = 240
#: The mains line drawn again over the edge readings, one series per end so the two stretches
#: are not joined across the period (the legend names the first only).
EDGE_SERIES = ("edges: less reliable", "edges: less reliable (end)")
EDGE_COLOUR = "#d62728"
MAINS_COLOUR = "#7f7f7f"
#: One hue per appliance: its estimate in the strong shade, its measurement in the light one.
APPLIANCE_COLOURS = (
    ("#1f77b4", "#aec7e8"),
    ("#2ca02c", "#98df8a"),
    ("#9467bd", "#c5b0d5"),
    ("#ff7f0e", "#ffbb78"),
    ("#8c564b", "#c49c94"),
    ("#e377c2", "#f7b6d2"),
    ("#17becf", "#9edae5"),
    ("#bcbd22", "#dbdb8d"),
)
KWH_DECIMALS = 3
SHARE_DECIMALS = 1
MAE_DECIMALS = 1


def estimate_series(name: str) -> str:
    return f"{name} (estimate)"


def truth_series(name: str) -> str:
    return f"{name} (measured)"


def chart_x(table: MainsTable, interval_s: int) -> tuple[str, list[datetime] | list[float]]:
    """The x axis: the Time column when the upload had one, else hours from the first reading."""
    if table.times is not None:
        return "time", list(table.times)
    return "hour", [i * interval_s / 3600 for i in range(len(table.mains_w))]


def chart_positions(table: MainsTable, interval_s: int) -> list[float]:
    """Each reading's place on the x axis as the chart reports a dragged range: seconds since
    1970 for times (naive times read as UTC, as the chart's data are), else hours."""
    x_name, x = chart_x(table, interval_s)
    if x_name == "time":
        return [pd.Timestamp(moment).timestamp() for moment in x]
    return [float(value) for value in x]  # type: ignore[arg-type]


def span_of(positions: Sequence[float], low: float, high: float) -> tuple[int, int]:
    """The readings ``[first, last)`` inside a dragged x range, at least two of them."""
    first = bisect.bisect_left(positions, min(low, high))
    last = bisect.bisect_right(positions, max(low, high))
    first = min(first, max(len(positions) - 2, 0))
    return first, max(last, min(first + 2, len(positions)))


def kept_points(watts: np.ndarray, limit: int) -> np.ndarray:
    """Which points of a series to draw: all when there are at most ``limit``, else each
    bin's lowest and highest (so a kettle's two-minute spike survives a day's overview). The
    browser's chart slows with every point it draws; zooming in redraws at full detail."""
    if watts.size <= limit:
        return np.arange(watts.size)
    bounds = np.linspace(0, watts.size, limit // 2 + 1).astype(int)
    kept: set[int] = set()
    for first, last in itertools.pairwise(bounds):
        piece = watts[first:last]
        kept.update((first + int(np.argmin(piece)), first + int(np.argmax(piece))))
    return np.array(sorted(kept))


def chart_lines(
    table: MainsTable, prediction: NilmPrediction
) -> list[tuple[str, int, Sequence[float]]]:
    """Every line of the chart: (series name, index of its first reading, watts)."""
    start, count, edge = prediction.first_reading, prediction.readings, prediction.edge_readings
    lines: list[tuple[str, int, Sequence[float]]] = [(MAINS_SERIES, 0, table.mains_w)]
    for name, watts in prediction.appliances_w.items():
        lines.append((estimate_series(name), start, watts))
        if name in table.truth_w:
            lines.append((truth_series(name), 0, table.truth_w[name]))
    if edge > 0:
        mains = table.mains_w[start : start + count]
        lines.append((EDGE_SERIES[0], start, mains[:edge]))
        lines.append((EDGE_SERIES[1], start + count - edge, mains[-edge:]))
    return lines


def chart_frame(
    table: MainsTable,
    prediction: NilmPrediction,
    span: tuple[int, int] | None = None,
    limit: int = MAX_POINTS_PER_SERIES,
) -> tuple[pd.DataFrame, str]:
    """Long format (x, ``power_w``, ``series``) for an overlaid line chart of the mains, each
    appliance's estimate, its measurement when uploaded and the edge readings: the readings
    ``span`` (``[first, last)``, all by default), at most ``limit`` points per line."""
    x_name, x = chart_x(table, prediction.interval_s)
    low, high = span or (0, len(x))
    parts = []
    for name, offset, watts in chart_lines(table, prediction):
        first, last = max(low - offset, 0), min(high - offset, len(watts))
        if first >= last:
            continue
        values = np.asarray(watts[first:last], dtype=np.float64)
        kept = kept_points(values, limit)
        parts.append(
            pd.DataFrame(
                {
                    x_name: [x[offset + first + int(i)] for i in kept],
                    "power_w": values[kept],
                    "series": name,
                }
            )
        )
    return pd.concat(parts, ignore_index=True), x_name


def legend(frame: pd.DataFrame, colours: dict[str, str]) -> str:
    """The chart's legend as HTML that wraps on a narrow screen (the chart's own legend is one
    clipped row): the series drawn, the edges once."""
    items = [
        f'<span style="white-space:nowrap;margin-right:1em">'
        f'<span style="color:{colours[name]}">&#9644;</span> {html.escape(name)}</span>'
        for name in frame["series"].unique()
        if name != EDGE_SERIES[1]
    ]
    return '<div id="nilm-legend" style="display:flex;flex-wrap:wrap">' + "".join(items) + "</div>"


def colour_map(appliances: Sequence[str]) -> dict[str, str]:
    """A colour for every series the chart may hold (the plot needs one for each): both edge
    stretches in one colour, as they are one thing in two places."""
    colours = {MAINS_SERIES: MAINS_COLOUR, **dict.fromkeys(EDGE_SERIES, EDGE_COLOUR)}
    for at, name in enumerate(appliances):
        strong, light = APPLIANCE_COLOURS[at % len(APPLIANCE_COLOURS)]
        colours[estimate_series(name)] = strong
        colours[truth_series(name)] = light
    return colours


def edge_sentence(table: MainsTable, prediction: NilmPrediction) -> str:
    """Which readings are less reliable, in words (with their times when known)."""
    edge, count = prediction.edge_readings, prediction.readings
    if edge == 0:
        skipped = prediction.first_reading
        return (
            f"Only readings with a full window of real data around them are estimated: the "
            f"first and last {skipped} readings are left out."
        )
    where = ""
    if table.times is not None and count > 0:
        times = table.times[prediction.first_reading : prediction.first_reading + count]
        head, tail = times[: min(edge, count)], times[max(count - edge, 0) :]
        where = (
            f" ({_when(head[0])} to {_when(head[-1])} and {_when(tail[0])} to {_when(tail[-1])})"
        )
    return (
        f"The first and last {edge} readings{where} are estimated from windows padded with "
        "repeated readings: they are less reliable (red in the chart, 'edge kWh' in the table)."
    )


def _when(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="minutes")


def energy_html(summary: EnergySummary) -> str:
    """The energy table: kWh and share of the mains per appliance, the part from edge readings,
    and the measured kWh with the MAE when the upload had measurements."""
    measured = any(row.true_kwh is not None for row in summary.appliances)
    head = ["appliance", "estimated kWh", "share of mains", "edge kWh"]
    head += ["measured kWh", "MAE (W)"] if measured else []
    lines = ['<div style="overflow-x:auto"><table id="nilm-energy-table">']
    lines.append("<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>")
    for row in summary.appliances:
        cells = [
            _cell("estimate-kwh", row.estimate_kwh, KWH_DECIMALS),
            _cell("share", None if row.share is None else 100 * row.share, SHARE_DECIMALS, " %"),
            _cell("edge-kwh", row.edge_kwh, KWH_DECIMALS),
        ]
        if measured:
            cells.append(_cell("true-kwh", row.true_kwh, KWH_DECIMALS))
            cells.append(_cell("mae-w", row.mae_w, MAE_DECIMALS))
        name = html.escape(row.name)
        lines.append(
            f'<tr data-appliance="{name}"><th scope="row">{name}</th>{"".join(cells)}</tr>'
        )
    mains = _cell("estimate-kwh", summary.mains_kwh, KWH_DECIMALS)
    rest = "<td></td><td></td><td></td><td></td>" if measured else "<td></td><td></td>"
    lines.append(f'<tr data-appliance="mains"><th scope="row">mains (total)</th>{mains}{rest}</tr>')
    lines.append("</tbody></table></div>")
    lines.append(f'<p id="nilm-period" data-value="{summary.hours!r}">{summary.hours:g} hours.</p>')
    return "\n".join(lines)


def _cell(field: str, value: float | None, decimals: int, unit: str = "") -> str:
    if value is None:
        return f'<td data-field="{field}">-</td>'
    return f'<td data-field="{field}" data-value="{value!r}">{value:.{decimals}f}{unit}</td>'
