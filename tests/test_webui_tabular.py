"""The tabular page in a real browser against a real server for a trained AVM bundle: what the
page shows equals what ``POST /predict`` answers for the same row or CSV."""

import csv
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from browser_fixtures import PHONE, WAIT_MS
from modelyard.core.bundle import Bundle
from modelyard.serving.server_process import running_server
from modelyard.webui.client import ServerClient
from modelyard.webui.tabular_batch import MAX_REFUSED_ROWS, BatchError, read_table, value_table
from modelyard.webui.tabular_form import request_fields
from modelyard.webui.ui_process import running_ui
from tabular_fixtures import VALID_ROW, build_avm_bundle

pytestmark = pytest.mark.slow  # the bundle comes from a (quick) training run
pytest_plugins = ["browser_fixtures"]

#: Rows per request, below the batch's size, so the page must split the CSV.
MAX_ROWS = 4
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "ui-tabular.png"
SCREENSHOT_VIEWPORT = {"width": 1000, "height": 750}
#: Answer titles (the schema's) -> the /predict field they show.
SHOWN = {"Price Per M2": "price_per_m2", "Total Price": "total_price"}


@pytest.fixture(scope="module")
def avm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_avm_bundle(tmp_path_factory, 300, f"project.serving.max_rows={MAX_ROWS}")[1]


@pytest.fixture(scope="module")
def server(avm_bundle: Bundle) -> Iterator[str]:
    with running_server(avm_bundle.path) as url:
        yield url


@pytest.fixture(scope="module")
def ui(server: str) -> Iterator[str]:
    with running_ui(server) as url:
        yield url


def predict(server: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server}/predict", json=body, timeout=30)


def predict_requests(server: str) -> dict[str, int]:
    """``POST /predict`` requests the server has answered, by status (its /metrics)."""
    text = httpx.get(f"{server}/metrics").text
    found = re.findall(
        r'^modelyard_http_requests_total\{method="POST",route="/predict",status="(\d+)"\} (\S+)',
        text,
        re.MULTILINE,
    )
    return {status: int(float(count)) for status, count in found}


def requests_since(server: str, before: dict[str, int], expected: dict[str, int]) -> dict[str, int]:
    """The ``POST /predict`` requests answered since ``before``, once they reach ``expected``
    or after a second (a counter is updated just after its answer is sent)."""
    deadline = time.monotonic() + 1.0
    while True:
        now = predict_requests(server)
        sent = {status: n - before.get(status, 0) for status, n in now.items()}
        sent = {status: n for status, n in sent.items() if n}
        if sent == expected or time.monotonic() > deadline:
            return sent
        time.sleep(0.05)


def open_page(page: Page, ui: str) -> Page:
    page.goto(ui)
    page.locator("#tabular-submit").wait_for()
    return page


def fill_row(page: Page, row: dict[str, Any]) -> None:
    """Type the row into the form the way a person would: one box at a time."""
    for name, value in row.items():
        box = page.locator(f"#tabular-field-{name}").locator("input, textarea").first
        box.fill(str(value))
        box.press("Enter")  # takes the typed value (also in a choice list, which closes)


def shown_numbers(page: Page) -> dict[str, float]:
    """The answer as the page shows it: "Title: 1,234.5 unit" -> {field: 1234.5}."""
    text = page.locator("#tabular-answer").inner_text()
    found = re.findall(r"([A-Za-z0-9 ]+):\s*([-\d,]+(?:\.\d+)?)", text)
    return {SHOWN[title.strip()]: float(number.replace(",", "")) for title, number in found}


def save_screenshot(page: Page) -> None:
    """The form and its answer (with a warning), down to the end of the answer."""
    page.set_viewport_size(SCREENSHOT_VIEWPORT)  # type: ignore[arg-type]
    box = page.locator("#tabular-warnings").bounding_box()
    assert box is not None
    height = box["y"] + box["height"] + 16 + page.evaluate("window.scrollY")
    clip = {"x": 0, "y": 0, "width": SCREENSHOT_VIEWPORT["width"], "height": height}
    page.screenshot(path=str(SCREENSHOT), full_page=True, clip=clip)  # type: ignore[arg-type]
    assert SCREENSHOT.stat().st_size < 200_000


def value_on_page(page: Page, row: dict[str, Any]) -> None:
    fill_row(page, row)
    page.locator("#tabular-submit").click()


def test_the_form_is_the_servers_schema(server: str) -> None:
    """Required and optional fields as the AVM server's schema declares them."""
    info = httpx.get(f"{server}/info").json()
    assert info["details"]["max_rows"] == MAX_ROWS
    schema = httpx.get(f"{server}/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["schema"]["anyOf"][0]["required"]) == {"area_m2", "zip_code", "sale_date"}


def test_a_filled_form_shows_what_predict_answers(page: Page, ui: str, server: str) -> None:
    open_page(page, ui)
    expect(page.locator("#tabular-field-construction_year")).to_contain_text("(optional)")
    expect(page.locator("#tabular-field-area_m2")).to_contain_text("allowed 15 to 300")
    value_on_page(page, VALID_ROW)

    expect(page.locator("#tabular-answer")).to_contain_text("Total Price")
    expected = predict(server, VALID_ROW).json()["predictions"][0]
    assert shown_numbers(page) == {k: expected[k] for k in SHOWN.values()}
    expect(page.locator("#tabular-answer")).to_contain_text("DKK/m2")
    assert page.locator("#tabular-warnings").inner_text().strip() == ""

    # an out-of-range area: the server's own sentence, and the old answer is gone
    value_on_page(page, {"area_m2": 5000})
    sentence = "less than or equal to 300"
    expect(page.locator("#tabular-error")).to_contain_text(sentence)
    assert sentence in predict(server, {**VALID_ROW, "area_m2": 5000}).text
    expect(page.locator("#tabular-answer")).to_have_text("")

    # an unseen zip code: valued, with the server's warning in view
    unseen = {**VALID_ROW, "area_m2": 82, "zip_code": "1234"}
    value_on_page(page, {"area_m2": 82, "zip_code": "1234"})
    warning = predict(server, unseen).json()["predictions"][0]["warnings"][0]
    expect(page.locator("#tabular-warnings")).to_contain_text(warning)
    expect(page.locator("#tabular-warnings")).to_be_visible()
    expect(page.locator("#tabular-error")).to_have_text("")
    if os.environ.get("MODELYARD_UI_SCREENSHOTS") == "1":
        save_screenshot(page)


def test_a_csv_round_trip_matches_predict_and_names_the_bad_row(
    page: Page, ui: str, server: str, tmp_path: Path
) -> None:
    rows = [
        {**VALID_ROW, "area_m2": 40 + 10 * i, "zip_code": ["2100", "8000", "9999"][i % 3]}
        for i in range(6)
    ]
    rows[4]["area_m2"] = 5000  # refused by the server: its sentence must name this row
    upload = tmp_path / "flats.csv"
    with upload.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["flat", *VALID_ROW])
        writer.writeheader()
        writer.writerows({"flat": f"F{i}", **row} for i, row in enumerate(rows))

    open_page(page, ui)
    before = predict_requests(server)
    page.locator("#tabular-batch-file input[type=file]").set_input_files(upload)
    page.locator("#tabular-batch-submit").click()
    summary = page.locator("#tabular-batch-summary")
    expect(summary).to_contain_text("Valued 5 of 6 rows")
    # rows 1-4 in one request; rows 5-6 refused together, then sent one by one
    assert requests_since(server, before, {"200": 2, "422": 2}) == {"200": 2, "422": 2}
    expect(summary).to_contain_text("row 5 (line 6): Area_m2: Input should be less than or equal")
    with page.expect_download() as download:
        page.locator("#tabular-batch-result a").first.click()
    result = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))

    good = [row for i, row in enumerate(rows) if i != 4]  # more than MAX_ROWS: two requests
    expected = iter(
        predict(server, good[:MAX_ROWS]).json()["predictions"]
        + predict(server, good[MAX_ROWS:]).json()["predictions"]
    )
    assert [r["flat"] for r in result] == [f"F{i}" for i in range(6)]
    for i, line in enumerate(result):
        if i == 4:
            assert line["price_per_m2"] == "" and "less than or equal to 300" in line["error"]
            continue
        answer = next(expected)
        assert float(line["price_per_m2"]) == answer["price_per_m2"]
        assert float(line["total_price"]) == answer["total_price"]
        assert line["warnings"] == "; ".join(answer["warnings"]) and line["error"] == ""
    assert "9999" in result[2]["warnings"]


def test_a_batch_of_mostly_bad_rows_stops_with_a_sentence(server: str) -> None:
    client = ServerClient(server)
    fields = request_fields(client.openapi())
    header = ",".join(VALID_ROW)
    bad = ",".join(str(v) for v in {**VALID_ROW, "area_m2": 5000}.values())
    table = read_table("\n".join([header, *[bad] * (MAX_REFUSED_ROWS + 5)]).encode())
    try:
        with pytest.raises(BatchError) as refused:
            value_table(client, fields, table, MAX_ROWS)
    finally:
        client.close()
    assert str(refused.value) == (
        f"Stopped: the server refused more than {MAX_REFUSED_ROWS} rows; the first, "
        "row 1 (line 2): Area_m2: Input should be less than or equal to 300."
    )


def test_a_csv_without_a_required_column_is_a_sentence(page: Page, ui: str, tmp_path: Path) -> None:
    upload = tmp_path / "no-zip.csv"
    upload.write_text("area_m2,sale_date\n82,2021-10-15\n", encoding="utf-8")
    open_page(page, ui)
    page.locator("#tabular-batch-file input[type=file]").set_input_files(upload)
    page.locator("#tabular-batch-submit").click()
    expect(page.locator("#tabular-batch-summary")).to_contain_text(
        "The CSV lacks the required column(s) zip_code"
    )
    expect(page.locator("#tabular-batch-result a")).to_have_count(0)


def test_examples_are_offered_only_when_the_server_ships_them(
    page: Page, ui: str, server: str
) -> None:
    listed = httpx.get(f"{server}/examples")
    csvs = (
        [e for e in listed.json()["examples"] if "csv" in e["media_type"]]
        if listed.is_success
        else []
    )
    open_page(page, ui)
    picker = page.locator("#tabular-example")
    if not csvs:
        expect(picker).to_be_hidden()
        return
    picker.locator("input").click()
    page.get_by_role("option").first.click()
    expect(page.locator("#tabular-field-area_m2 textarea")).not_to_have_value("")
    page.locator("#tabular-submit").click()
    expect(page.locator("#tabular-answer")).to_contain_text("Total Price")


def test_the_page_works_on_a_phone(browser: Browser, ui: str, server: str) -> None:
    context = browser.new_context(viewport=PHONE)  # type: ignore[arg-type]
    context.set_default_timeout(WAIT_MS)
    page = open_page(context.new_page(), ui)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        value_on_page(page, VALID_ROW)
        expect(page.locator("#tabular-answer")).to_contain_text("Total Price")
        expected = predict(server, VALID_ROW).json()["predictions"][0]
        assert shown_numbers(page) == {k: expected[k] for k in SHOWN.values()}
        box = page.locator("#tabular-submit").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    finally:
        context.close()
