"""The NILM page: its CSV reading, energy figures and display as plain functions, then the real
page in headless Chromium against a real server (an untrained, real ONNX bundle) with a day of
real UK-DALE mains, checked against what ``/predict`` answers for the same readings."""

import csv
import gzip
import importlib
import math
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page

from bundle_factory import make_nilm_bundle
from conftest import REPO
from modelyard.serving.server_process import running_server
from modelyard.webui.nilm_display import (
    EDGE_SERIES,
    MAINS_SERIES,
    chart_frame,
    chart_positions,
    colour_map,
    edge_sentence,
    energy_html,
    estimate_series,
    kept_points,
    legend,
    span_of,
    truth_series,
)
from modelyard.webui.nilm_energy import (
    NilmAnswerError,
    NilmPrediction,
    kwh,
    mean_absolute_error,
    summarise,
)
from modelyard.webui.nilm_series import (
    MAX_UPLOAD_BYTES,
    NilmInputError,
    column_key,
    interval_of,
    parse_mains_csv,
)
from modelyard.webui.nilm_view import csv_example_names
from modelyard.webui.ui_process import running_ui

pytest_plugins = ["browser_fixtures"]

APPLIANCES = ("kettle", "microwave")
DAY = 1440
SCREENSHOT = REPO / "docs" / "images" / "ui-nilm.png"


def table_of(text: str, appliances: tuple[str, ...] = APPLIANCES) -> Any:
    return parse_mains_csv("house.csv", text.encode(), appliances)


def prediction(
    appliances: dict[str, list[float]], edge: int = 0, first: int = 0, interval_s: int = 60
) -> NilmPrediction:
    body = {
        "interval_s": interval_s,
        "first_reading": first,
        "edge_readings": edge,
        "appliances": appliances,
    }
    return NilmPrediction.from_answer(body)


# -- reading the CSV -------------------------------------------------------------------------


def test_a_dataset_csv_gives_mains_times_measured_appliances_and_the_ignored_columns() -> None:
    table = table_of(
        "Time,Aggregate,Kettle,Dishwasher,WashingMachine\n"
        "2013-06-01 00:00:00,245.5,0,1,2\n"
        "2013-06-01 00:01:00,2900,2600,1,2\n"
    )
    assert table.mains_w == (245.5, 2900.0)
    assert table.times == (datetime(2013, 6, 1, 0, 0), datetime(2013, 6, 1, 0, 1))
    assert table.truth_w == {"kettle": (0.0, 2600.0)}
    assert table.ignored == ("Dishwasher", "WashingMachine")
    assert table.interval_s == 60
    assert table.request("valid") == {
        "aggregate_w": [245.5, 2900.0],
        "edges": "valid",
        "interval_s": 60,
    }


def test_a_mains_column_alone_is_enough_and_sends_no_interval() -> None:
    table = table_of("\ufeffmains\n1\n\n2\n")  # a BOM and a blank line are tolerated
    assert table.mains_w == (1.0, 2.0)
    assert table.times is None and table.truth_w == {} and table.ignored == ()
    assert table.request() == {"aggregate_w": [1.0, 2.0], "edges": "pad"}


def test_appliance_columns_match_whatever_their_case_and_separators() -> None:
    assert column_key(" Washing_Machine ") == column_key("WashingMachine") == "washingmachine"
    table = parse_mains_csv("h.csv", b"MAINS,washing-machine\n5,1\n", ("WashingMachine",))
    assert table.truth_w == {"WashingMachine": (1.0,)}


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        (
            b"Time,Kettle\n2013-06-01 00:00,1\n",
            "house.csv has no mains column: name it 'mains' "
            "or 'Aggregate' (its columns: Time, Kettle).",
        ),
        (b"mains\n1\nabc\n", "Line 3: mains is 'abc', not a number of watts."),
        (b"mains,kettle\n1,\n", "Line 2: kettle is empty, not a number of watts."),
        (b"mains\nnan\n", "Line 2: mains is nan, not a finite number."),
        (b"mains,kettle\n1\n", "Line 2 of house.csv has 1 values; its header has 2 columns."),
        (b"mains\n", "house.csv has a header but no readings."),
        (b"  \n", "house.csv is empty."),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "house.csv is not a CSV file (it holds binary data)."),
        (b"mains\n\xff\xfe1\n", "house.csv is not a CSV file (it is not UTF-8 text)."),
        (
            b"Time,mains\nyesterday,1\n",
            "Line 2: Time is 'yesterday', not a date and time such as 2013-06-01 07:00:00.",
        ),
    ],
)
def test_an_unusable_upload_is_one_sentence(content: bytes, sentence: str) -> None:
    with pytest.raises(NilmInputError) as caught:
        parse_mains_csv("house.csv", content, APPLIANCES)
    assert str(caught.value) == sentence


def test_an_oversized_upload_is_refused_before_it_is_read() -> None:
    with pytest.raises(NilmInputError, match="larger than 20 MB"):
        parse_mains_csv("big.csv", b"0" * (MAX_UPLOAD_BYTES + 1), APPLIANCES)


def test_the_time_column_gives_the_interval_only_when_it_steps_evenly_forward() -> None:
    start = datetime(2013, 6, 1)
    assert interval_of([start + timedelta(seconds=6 * i) for i in range(4)]) == 6
    assert interval_of([start]) is None
    gap = [start, start + timedelta(minutes=1), start + timedelta(minutes=3)]
    with pytest.raises(NilmInputError, match=r"steps of 60 s, 120 s"):
        interval_of(gap)
    with pytest.raises(NilmInputError, match="not evenly spaced"):
        interval_of([start, start - timedelta(minutes=1)])
    with pytest.raises(NilmInputError, match="time zone"):
        interval_of([start, datetime(2013, 6, 1, 0, 1, tzinfo=UTC)])


def test_csv_examples_are_picked_from_the_examples_answer() -> None:
    body = {
        "examples": [
            {"name": "day.csv", "media_type": "text/csv", "description": "a day"},
            {"name": "leaf.jpg", "media_type": "image/jpeg", "description": "x"},
            {"name": "week", "media_type": "text/csv"},
            {"media_type": "text/csv"},
        ]
    }
    assert csv_example_names(body) == ["day.csv", "week"]
    assert csv_example_names({"detail": "Not Found"}) == []
    assert csv_example_names([1, 2]) == []


# -- energy ----------------------------------------------------------------------------------


def test_energy_share_and_edge_energy_follow_from_the_predicted_watts() -> None:
    # 4 readings at 15 min = 1 hour; the first and last reading are edge readings
    answer = prediction(
        {"kettle": [1000, 0, 0, 3000], "microwave": [0, 0, 0, 0]}, edge=1, interval_s=900
    )
    summary = summarise(answer, [2000, 1000, 1000, 4000], {"kettle": [1000, 0, 0, 2000]})
    kettle, microwave = summary.appliances
    assert summary.hours == 1.0
    assert summary.mains_kwh == pytest.approx(2.0)
    assert kettle.estimate_kwh == pytest.approx(1.0)
    assert kettle.share == pytest.approx(0.5)
    assert kettle.edge_kwh == pytest.approx(1.0)
    assert kettle.true_kwh == pytest.approx(0.75)
    assert kettle.mae_w == pytest.approx(250.0)
    assert microwave.estimate_kwh == 0 and microwave.true_kwh is None and microwave.mae_w is None


def test_with_valid_edges_figures_cover_only_the_predicted_readings() -> None:
    answer = prediction({"kettle": [100.0, 100.0]}, first=1, interval_s=3600)
    assert answer.edge_mask() == (False, False)
    # readings 1 and 2 of 4 were predicted; negative mains count as 0 W like the server does
    summary = summarise(answer, [9999, 300, -50, 9999], {"kettle": [7, 50, 150, 7]})
    (kettle,) = summary.appliances
    assert summary.mains_kwh == pytest.approx(0.3)
    assert kettle.estimate_kwh == pytest.approx(0.2) and kettle.edge_kwh == 0
    assert kettle.true_kwh == pytest.approx(0.2) and kettle.mae_w == pytest.approx(50.0)


def test_no_mains_energy_means_no_share() -> None:
    summary = summarise(prediction({"kettle": [0.0]}), [0.0], {})
    assert summary.appliances[0].share is None


def test_kwh_and_mae_by_hand() -> None:
    assert kwh([1000.0] * 60, 60) == pytest.approx(1.0)
    assert mean_absolute_error([1, 2, 3], [2, 2, 0]) == pytest.approx(4 / 3)
    with pytest.raises(ValueError):
        mean_absolute_error([1.0], [])


def test_edge_mask_marks_both_ends() -> None:
    assert prediction({"k": [0.0] * 5}, edge=2).edge_mask() == (True, True, False, True, True)


@pytest.mark.parametrize(
    "body",
    [
        {"detail": "x"},
        {"interval_s": 60, "edge_readings": 0, "appliances": {}},
        {"interval_s": 60, "edge_readings": 0, "appliances": {"a": [1.0], "b": [1.0, 2.0]}},
        {"interval_s": 60, "edge_readings": 0, "appliances": {"a": ["x"]}},
        [1, 2],
    ],
)
def test_an_answer_that_is_no_nilm_prediction_is_a_sentence(body: Any) -> None:
    with pytest.raises(NilmAnswerError, match="server's answer"):
        NilmPrediction.from_answer(body)


# -- display ---------------------------------------------------------------------------------


def test_the_chart_overlays_mains_estimates_measurements_and_both_edge_stretches() -> None:
    table = table_of(
        "Time,mains,kettle\n" + "".join(f"2013-06-01 00:0{i}:00,{100 * i},{i}\n" for i in range(6))
    )
    answer = prediction({"kettle": [9.0] * 6, "microwave": [1.0] * 6}, edge=2)
    frame, x_name = chart_frame(table, answer)
    assert x_name == "time"
    counts = frame["series"].value_counts().to_dict()
    assert counts == {
        MAINS_SERIES: 6,
        estimate_series("kettle"): 6,
        truth_series("kettle"): 6,
        estimate_series("microwave"): 6,
        EDGE_SERIES[0]: 2,
        EDGE_SERIES[1]: 2,
    }
    end = frame[frame["series"] == EDGE_SERIES[1]]
    assert end["power_w"].tolist() == [400.0, 500.0]
    assert end["time"].tolist() == [datetime(2013, 6, 1, 0, 4), datetime(2013, 6, 1, 0, 5)]
    assert set(frame["series"]) <= set(colour_map(APPLIANCES))
    key = legend(frame, colour_map(APPLIANCES))
    assert EDGE_SERIES[0] in key and EDGE_SERIES[1] not in key and key.count("&#9644;") == 5
    light = colour_map(APPLIANCES)[truth_series("kettle")]
    assert f'color:{light}">&#9644;</span> kettle (measured)' in key


def test_without_times_the_chart_counts_hours_and_valid_estimates_start_at_first_reading() -> None:
    table = table_of("mains\n0\n1\n2\n3\n")
    answer = prediction({"kettle": [5.0, 6.0]}, first=1, interval_s=1800)
    frame, x_name = chart_frame(table, answer)
    assert x_name == "hour"
    estimate = frame[frame["series"] == estimate_series("kettle")]
    assert estimate["hour"].tolist() == [0.5, 1.0]
    assert EDGE_SERIES[0] not in set(frame["series"])
    assert "first and last 1 readings are left out" in edge_sentence(table, answer)


def test_a_long_series_is_drawn_with_each_bins_extremes_and_a_zoom_in_full_detail() -> None:
    watts = [100.0] * 1440
    watts[700] = 3000.0  # a kettle minute must survive the overview
    watts[900] = -5.0
    table = table_of("mains\n" + "".join(f"{w}\n" for w in watts))
    answer = prediction({"kettle": watts}, edge=7)
    frame, _ = chart_frame(table, answer, limit=240)
    mains = frame[frame["series"] == MAINS_SERIES]
    assert len(mains) <= 240
    assert mains["power_w"].max() == 3000.0 and mains["power_w"].min() == -5.0
    assert mains["hour"].is_monotonic_increasing
    assert mains.loc[mains["power_w"].idxmax(), "hour"] == pytest.approx(700 / 60)
    zoomed, _ = chart_frame(table, answer, span=(690, 710), limit=240)
    assert zoomed[zoomed["series"] == MAINS_SERIES]["hour"].tolist() == pytest.approx(
        [i / 60 for i in range(690, 710)]
    )
    assert set(zoomed["series"]) == {MAINS_SERIES, estimate_series("kettle")}  # no edge there
    ending, _ = chart_frame(table, answer, span=(1430, 1440), limit=240)
    assert len(ending[ending["series"] == EDGE_SERIES[1]]) == 7


def test_kept_points_keeps_everything_below_the_limit() -> None:
    assert kept_points(np.array([3.0, 1.0, 2.0]), 10).tolist() == [0, 1, 2]
    assert kept_points(np.array([0, 5, 1, 1, 9, 2, 3, 3.0]), 4).tolist() == [0, 1, 4, 5]


def test_a_dragged_range_selects_the_readings_inside_it() -> None:
    positions = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert span_of(positions, 0.5, 3.0) == (1, 4)
    assert span_of(positions, 3.0, 0.5) == (1, 4)
    assert span_of(positions, 1.2, 1.8) == (2, 4)  # at least two readings
    assert span_of(positions, 9.0, 10.0) == (3, 5)
    table = table_of("Time,mains\n2013-06-01 00:00:00,1\n2013-06-01 00:01:00,1\n")
    assert chart_positions(table, 60) == [1370044800.0, 1370044860.0]  # as the chart's UTC ms


def test_the_edge_sentence_names_the_edge_times() -> None:
    table = table_of("Time,mains\n" + "".join(f"2013-06-01 07:0{i}:00,1\n" for i in range(6)))
    sentence = edge_sentence(table, prediction({"k": [0.0] * 6}, edge=2))
    assert (
        "first and last 2 readings (2013-06-01 07:00 to 2013-06-01 07:01 and "
        "2013-06-01 07:04 to 2013-06-01 07:05)" in sentence
    )
    assert "less reliable" in sentence


def test_the_energy_table_rounds_for_people_and_keeps_exact_values_for_machines() -> None:
    answer = prediction({"kettle": [1000.0, 1234.5678]}, edge=1, interval_s=3600)
    html = energy_html(summarise(answer, [2000.0, 2000.0], {"kettle": [0.0, 0.0]}))
    assert '<tr data-appliance="kettle">' in html
    kettle_row = next(line for line in html.splitlines() if 'data-appliance="kettle"' in line)
    exact = dict(re.findall(r'data-field="([a-z-]+)" data-value="([^"]+)">', kettle_row))
    assert float(exact["estimate-kwh"]) == pytest.approx(2.2345678)
    assert float(exact["share"]) == pytest.approx(55.864195)
    assert float(exact["mae-w"]) == pytest.approx(1117.2839)
    assert '"estimate-kwh" data-value="4.0">4.000</td>' in html  # the mains row, after kettle's
    assert float(exact["edge-kwh"]) == float(exact["estimate-kwh"])  # 2 readings, both edges
    for text in (">2.235</td>", ">55.9 %</td>", ">0.000</td>", ">1117.3</td>"):
        assert text in kettle_row
    assert '<p id="nilm-period" data-value="2.0">2 hours.</p>' in html
    without_truth = energy_html(summarise(answer, [2000.0, 2000.0], {}))
    assert "MAE" not in without_truth and "measured kWh" not in without_truth


# -- the page in a real browser ------------------------------------------------------------


@pytest.fixture(scope="module")
def day_csv(nilm_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first day of real UK-DALE house 2 mains (June 2013) with its measured appliances."""
    with gzip.open(nilm_source / "ukdale_house2" / "2013-06.csv.gz", "rt", newline="") as handle:
        rows = [row for _, row in zip(range(DAY + 1), csv.reader(handle), strict=False)]
    path = tmp_path_factory.mktemp("nilm-ui") / "ukdale-house2-2013-06-01.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


SAMPLE_NAME = "sample-morning.csv"
#: A sample hour shipped in the bundle's examples/: a 250 W base load and a kettle boil.
SAMPLE_CSV = "Time,mains,kettle\n" + "".join(
    f"2013-06-01 07:{i:02d}:00,{2950 if 30 <= i < 33 else 250},{2700 if 30 <= i < 33 else 0}\n"
    for i in range(60)
)


def shipped_sample() -> dict[str, Any]:
    """``make_nilm_bundle``'s examples argument with the sample hour, where bundles carry
    examples (``GET /examples``); nothing where they do not, and the page shows no picker."""
    try:  # by name: the module is newer than some checkouts this test runs in
        examples = importlib.import_module("modelyard.core.bundle_examples")
    except ImportError:
        return {}
    sample = examples.ExampleFile(SAMPLE_NAME, "text/csv", "a kettle at 07:30", SAMPLE_CSV.encode())
    return {"examples": [sample]}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = tmp_path_factory.mktemp("nilm-ui-bundle") / "bundle"
    make_nilm_bundle(bundle, appliances=APPLIANCES, **shipped_sample())
    with running_server(bundle, extra_args=["--max-length", str(DAY)]) as url:
        yield url


@pytest.fixture(scope="module")
def ui_url(server_url: str) -> Iterator[str]:
    with running_ui(server_url) as url:
        yield url


def open_page(page: Page, ui_url: str) -> list[str]:
    """Load the page; the returned list fills with every request that leaves 127.0.0.1 (the
    page must work offline: no CDN, no web fonts)."""
    outside: list[str] = []
    page.on(
        "request",
        lambda r: (
            None
            if "//127.0.0.1" in r.url or r.url.startswith(("data:", "blob:"))
            else outside.append(r.url)
        ),
    )
    page.goto(ui_url)
    page.locator("#nilm-run").wait_for()
    return outside


def upload_and_run(page: Page, path: Path) -> float:
    """Upload ``path``, click the button, wait for the chart and the table (or the error):
    the seconds from the click to the drawn result."""
    page.locator("#nilm-upload input[type=file]").set_input_files(str(path))
    page.locator(f'#nilm-upload a[download="{path.name}"]').wait_for()
    started = time.perf_counter()
    page.locator("#nilm-run").click()
    page.locator("#nilm-energy-table, #nilm-message strong").first.wait_for()
    if page.locator("#nilm-energy-table").count():
        page.locator("#nilm-chart g.mark-line path").first.wait_for()
    return time.perf_counter() - started


def shown(page: Page, appliance: str, field: str) -> str:
    return page.locator(
        f'#nilm-energy-table tr[data-appliance="{appliance}"] td[data-field="{field}"]'
    ).inner_text()


AXES = "Array.from(document.querySelectorAll('#nilm-chart g.role-axis'), a => a.textContent).join()"


def zoom_in_and_out(page: Page) -> None:
    """Drag across a tenth of the day: the chart redraws 10:48 to 13:12 (quarter-hour axis
    labels); a double-click brings the whole day back."""
    page.locator("#nilm-chart").scroll_into_view_if_needed()
    whole_day = page.evaluate(AXES)
    box = page.locator("#nilm-chart g.mark-line").first.bounding_box()
    assert box is not None
    middle = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.45 * box["width"], middle)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.55 * box["width"], middle, steps=5)
    page.mouse.up()
    page.wait_for_function(f"{AXES} !== {whole_day!r}")
    assert "11:30" in page.evaluate(AXES) and "06 PM" not in page.evaluate(AXES)
    page.mouse.dblclick(box["x"] + 0.5 * box["width"], middle)
    page.wait_for_function(f"{AXES}.includes('06 PM') && !{AXES}.includes('11:30')")


def read_day(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "mains": np.array([float(r["Aggregate"]) for r in rows]),
        "kettle": np.array([float(r["Kettle"]) for r in rows]),
        "microwave": np.array([float(r["Microwave"]) for r in rows]),
    }


def test_a_day_of_real_mains_shows_what_predict_answers(
    page: Page, ui_url: str, server_url: str, day_csv: Path
) -> None:
    outside = open_page(page, ui_url)
    seconds = upload_and_run(page, day_csv)
    served_ms = float(re.findall(r"in (\d+) ms", page.locator("#nilm-message").inner_text())[0])
    print(
        f"NILM day ({DAY} readings): {seconds * 1000:.0f} ms from click to chart, "
        f"{served_ms:.0f} ms of it reading, predicting and summing up"
    )
    assert served_ms < 1000
    assert seconds < 5.0  # the browser's drawing, with room for a busy 2-core host

    day = read_day(day_csv)
    answer = httpx.post(
        f"{server_url}/predict",
        timeout=30,
        json={"aggregate_w": day["mains"].tolist(), "interval_s": 60, "edges": "pad"},
    ).json()
    edge = answer["edge_readings"]
    mains_kwh = np.maximum(day["mains"], 0).sum() / 60 / 1000
    assert shown(page, "mains", "estimate-kwh") == f"{mains_kwh:.3f}"
    for name in APPLIANCES:
        estimate = np.array(answer["appliances"][name])
        assert len(estimate) == DAY
        energy = estimate.sum() / 60 / 1000
        assert shown(page, name, "estimate-kwh") == f"{energy:.3f}"
        assert shown(page, name, "share") == f"{100 * energy / mains_kwh:.1f} %"
        edge_energy = (estimate[:edge].sum() + estimate[-edge:].sum()) / 60 / 1000
        assert shown(page, name, "edge-kwh") == f"{edge_energy:.3f}"
        assert shown(page, name, "true-kwh") == f"{day[name].sum() / 60 / 1000:.3f}"
        mae = np.abs(estimate - day[name]).mean()
        assert shown(page, name, "mae-w") == f"{mae:.1f}"
    message = page.locator("#nilm-message").inner_text()
    assert f"first and last {edge} readings (2013-06-01 00:00 to" in message
    assert "less reliable" in message and "Columns not used: Dishwasher, WashingMachine" in message
    key = page.locator("#nilm-key").inner_text()
    assert all(f"{name} (estimate)" in key and f"{name} (measured)" in key for name in APPLIANCES)
    assert outside == []
    zoom_in_and_out(page)
    if os.environ.get("MODELYARD_UI_SCREENSHOTS") == "1":
        page.set_viewport_size({"width": 1000, "height": 750})
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size < 200_000


def test_bad_uploads_show_the_sentence_and_no_result(
    page: Page, ui_url: str, tmp_path: Path
) -> None:
    no_mains = tmp_path / "no-mains.csv"
    no_mains.write_text("Time,Kettle\n2013-06-01 00:00:00,1\n")
    picture = tmp_path / "meter.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    too_long = tmp_path / "two-days.csv"
    too_long.write_text("mains\n" + "300\n" * (DAY + 1))
    expected = {
        no_mains: "no-mains.csv has no mains column: name it 'mains' or 'Aggregate' "
        "(its columns: Time, Kettle).",
        picture: "meter.png is not a CSV file (it holds binary data).",
        too_long: f"Aggregate_w has {DAY + 1} readings; between 15 and {DAY} are accepted.",
    }
    open_page(page, ui_url)
    page.locator("#nilm-run").click()  # nothing chosen yet
    nothing = "Upload a CSV of mains readings or pick a sample day first."
    page.locator("#nilm-message strong", has_text=nothing).wait_for()
    for path, sentence in expected.items():
        open_page(page, ui_url)  # a fresh page: the upload box holds one file
        upload_and_run(page, path)
        assert page.locator("#nilm-message").inner_text().strip() == sentence
        assert not page.locator("#nilm-energy").is_visible()
        assert "Traceback" not in page.content()


def test_a_sample_day_shipped_with_the_bundle_is_one_pick_away(
    page: Page, ui_url: str, server_url: str
) -> None:
    open_page(page, ui_url)
    listed = httpx.get(f"{server_url}/examples")
    if listed.status_code == 404:  # an older server: no picker, and no error either
        assert not page.locator("#nilm-example").is_visible()
        assert page.locator("#nilm-message").inner_text().strip() == ""
        return
    assert [e["name"] for e in listed.json()["examples"]] == [SAMPLE_NAME]
    page.locator("#nilm-example input").click()
    page.get_by_role("option", name=SAMPLE_NAME).click()
    page.locator("#nilm-run").click()
    page.locator("#nilm-energy-table").wait_for()
    assert SAMPLE_NAME in page.locator("#nilm-message").inner_text()
    mains_kwh = (57 * 250 + 3 * 2950) / 60 / 1000
    assert shown(page, "mains", "estimate-kwh") == f"{mains_kwh:.3f}"
    assert shown(page, "kettle", "true-kwh") == f"{3 * 2700 / 60 / 1000:.3f}"


def test_the_page_works_on_a_phone_with_full_windows_only(
    page: Page, ui_url: str, day_csv: Path
) -> None:
    from browser_fixtures import PHONE  # here: the module is pytest's plugin, loaded by then

    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    open_page(page, ui_url)
    assert page.locator("#nilm-upload").is_visible()
    page.locator("#nilm-edges").get_by_text("Only readings with a full window").click()
    upload_and_run(page, day_csv)
    table = page.locator("#nilm-energy")
    table.scroll_into_view_if_needed()
    assert table.is_visible() and page.locator("#nilm-chart").is_visible()
    box = table.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert shown(page, "kettle", "edge-kwh") == "0.000"
    hours = float(page.locator("#nilm-period").get_attribute("data-value") or "nan")
    assert math.isclose(hours, (DAY - 14) / 60)  # window 15: 7 readings left out at each end
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
