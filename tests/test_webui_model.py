"""The UI's frame and model tab in a real browser (Debian chromium via Playwright) against a real
prediction server and a real monitoring service on 127.0.0.1: what the tab shows equals what
``/info``, ``/ready`` and ``/drift`` answer; nothing is fetched from the internet; a phone-wide
screen does not scroll sideways; ``modelyard app BUNDLE`` stops the server it started.

The metric tables' layout rules are checked without a browser on the three families' shapes."""

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gradio as gr
import httpx
import pytest
from playwright.sync_api import Page, expect

from modelyard.monitoring.check import MonitorSettings
from modelyard.monitoring.service import MonitorService
from modelyard.serving.server_process import HOST, free_port, running_server
from modelyard.webui import app as webui_app
from modelyard.webui.client import ServerClient
from modelyard.webui.metrics_table import metrics_markdown
from modelyard.webui.model_text import NO_REGISTRY, drift_markdown, registry_markdown
from modelyard.webui.model_view import ERROR_MARK, read_facts
from modelyard.webui.ui_process import child_commands, is_running, running_ui
from modelyard.webui.views import ViewContext
from monitor_fixtures import flat_rows, make_bundle
from test_monitor_service import drifted_log, serving, wait_for
from vision_fixtures import make_vision_bundle

pytest_plugins = ["browser_fixtures"]

VISION_METRICS = {
    "task": "vision",
    "source": "/data/prepared/eurosat",
    "accuracy": 0.7431906614785992,
    "macro_f1": 0.6731446021596046,
    "n_samples": 257,
    "per_class": {
        "Forest": {"precision": 0.9347826, "recall": 0.704918, "f1": 0.803738, "support": 122},
        "River": {"precision": 0.8396226, "recall": 0.754237, "f1": 0.794642, "support": 118},
        "Sea": {"precision": 0.2711864, "recall": 0.941176, "f1": 0.421052, "support": 17},
    },
    "confusion_matrix": [[86, 16, 20], [6, 89, 23], [0, 1, 16]],
    "plots": ["/runs/eurosat/evaluation/plots/confusion_matrix.png"],
}
SCREENSHOTS = os.environ.get("MODELYARD_UI_SCREENSHOTS") == "1"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "ui-model.png"
#: Seconds a stopped process gets to be gone.
GONE_S = 30.0


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("ui-model") / "bundle"
    return make_vision_bundle(target, metrics=VISION_METRICS).path


@pytest.fixture(scope="module")
def server(bundle_path: Path) -> Iterator[str]:
    with running_server(bundle_path, extra_args=["--prediction-log", "none"]) as url:
        yield url


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``monitor --serve`` app over a log in which two of four columns drifted."""
    scratch = tmp_path_factory.mktemp("ui-monitor")
    log_url, _ = drifted_log(scratch / "predictions.db")
    settings = MonitorSettings(
        bundle=make_bundle(scratch / "bundle"), log_url=log_url, drift_rows=flat_rows
    )
    with serving(MonitorService(settings, every_s=3600)) as url:
        wait_for(lambda: httpx.get(f"{url}/drift").status_code == 200)
        yield url


@pytest.fixture(scope="module")
def ui(server: str, monitor: str) -> Iterator[str]:
    with running_ui(server, extra_args=["--monitor", monitor]) as url:
        yield url


def open_model_tab(page: Page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Model").click()
    expect(page.locator("#model-metrics table").first).to_be_visible()


def test_model_tab_shows_what_the_server_and_monitor_answer(
    page: Page, ui: str, server: str, monitor: str
) -> None:
    info = httpx.get(f"{server}/info").json()
    ready = httpx.get(f"{server}/ready").json()
    verdict = httpx.get(f"{monitor}/drift").json()
    open_model_tab(page, ui)
    identity = page.locator("#model-identity").inner_text()
    for fact in (info["name"], info["version"], info["sha256"], info["integrity"]["state"]):
        assert fact in identity
    assert ready["quantized"] is False
    assert "quantized (int8)\tno" in identity
    metrics = page.locator("#model-metrics")
    assert "accuracy\t0.7432" in metrics.inner_text()
    assert "macro_f1\t0.6731" in metrics.inner_text()
    forest = metrics.locator("tr", has_text="Forest").inner_text().split("\t")
    assert forest == ["Forest", "0.9348", "0.7049", "0.8037", "122"]
    assert "/runs/eurosat" not in metrics.inner_text()  # where evaluation ran is no metric
    expect(page.locator("#model-registry")).to_have_text(NO_REGISTRY)
    drift = page.locator("#model-drift")
    expect(drift).to_contain_text("Alert")
    for column in verdict["drift"]["drifted_columns"]:
        expect(drift).to_contain_text(column)
    expect(drift).to_contain_text(f"{verdict['drift']['share']:.0%} of")
    assert drift.get_by_role("link").get_attribute("href") == f"{monitor}/"
    page.locator("#model-drift-refresh").click()
    expect(drift).to_contain_text(verdict["drift"]["drifted_columns"][0])
    page.locator("#model-refresh").click()
    expect(page.locator("#model-identity")).to_contain_text(info["sha256"])
    if SCREENSHOTS:
        page.set_viewport_size({"width": 1000, "height": 750})
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size < 200_000


def open_predict_tab(page: Page) -> None:
    """Switch to the vision page and wait until its note and upload box are drawn (not for
    "network idle": Gradio keeps a connection open, so that wait can time out)."""
    page.get_by_role("tab", name="Predict").click()
    expect(page.locator("#vision-note")).to_be_visible()
    expect(page.locator("#vision-upload")).to_be_visible()
    page.wait_for_load_state("load")


def test_the_page_fetches_nothing_from_the_internet(page: Page, ui: str) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_model_tab(page, ui)
    open_predict_tab(page)
    assert requested
    hosts = {urlparse(url).hostname for url in requested if not url.startswith("data:")}
    assert hosts == {HOST}, sorted(url for url in requested if HOST not in url)


def test_a_phone_screen_does_not_scroll_sideways(page: Page, ui: str) -> None:
    from browser_fixtures import PHONE  # pytest_plugins has loaded it by now

    page.set_viewport_size(PHONE)
    open_model_tab(page, ui)
    expect(page.locator("#model-header")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    box = page.locator("#model-identity").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    open_predict_tab(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_app_for_a_bundle_stops_its_server_with_it(page: Page, bundle_path: Path) -> None:
    nobody = f"http://{HOST}:{free_port()}"
    with running_ui(str(bundle_path), extra_args=["--monitor", nobody]) as url:
        (app,) = commands_of(os.getpid(), "app", bundle_path)
        (server,) = commands_of(app, "serve", bundle_path)
        open_model_tab(page, url)
        expect(page.locator("#model-drift")).to_contain_text(
            f"The monitoring service at {nobody} gave no report: Cannot reach the server"
        )
    deadline = time.monotonic() + GONE_S
    while is_running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_running(app)
    assert not is_running(server)


def commands_of(parent: int, command: str, target: Path) -> list[int]:
    """The children of ``parent`` running ``modelyard COMMAND TARGET``."""
    return [
        pid
        for pid, arguments in child_commands(parent).items()
        if command in arguments and str(target) in arguments
    ]


def test_a_server_gone_away_is_a_sentence_on_refresh() -> None:
    nobody = f"http://{HOST}:{free_port()}"
    identity, metrics, registry = read_facts(ServerClient(nobody, timeout_s=2))
    assert identity == f"{ERROR_MARK} Cannot reach the server at {nobody} (ConnectError)."
    assert metrics == registry == ""


def test_a_missing_family_view_is_a_notice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(webui_app.FAMILY_VIEWS, "vision", "modelyard.webui.no_such_view")
    build = webui_app.predict_view("vision")
    context = ViewContext(ServerClient("http://127.0.0.1:9"), {"task": "vision"})
    with gr.Blocks() as blocks:
        build(context)
    (notice,) = [c for c in blocks.blocks.values() if isinstance(c, gr.Markdown)]
    assert notice.value == (
        "This version of the modelyard UI has no prediction page for vision models yet."
    )
    # a view module that exists but fails to import is a real error, not a notice
    (tmp_path / "broken_view.py").write_text("import no_such_package_for_the_view\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(webui_app.FAMILY_VIEWS, "vision", "broken_view")
    with pytest.raises(ModuleNotFoundError, match="no_such_package_for_the_view"):
        webui_app.predict_view("vision")


# --- the tables, per family shape (no browser) ------------------------------------------------


def table_rows(markdown: str) -> list[list[str]]:
    return [
        [part.strip() for part in line.strip("|").split(" | ")]
        for line in markdown.splitlines()
        if line.startswith("|") and "---" not in line
    ]


def test_nilm_metrics_compare_the_model_with_its_baselines() -> None:
    appliance = {
        "model": {"mae_w": 7.786184, "f1": 0.8277744, "on_threshold_w": 500.0},
        "baseline_mean": {"mae_w": 35.96703, "f1": 0.0, "on_threshold_w": 500.0},
        "mae_ratio_to_baseline": 0.2164811,
    }
    text = metrics_markdown({"task": "nilm", "overall": {"kettle": appliance}, "plots": ["/x"]})
    assert "#### overall / kettle" in text
    rows = table_rows(text)
    assert ["", "mae\\_w", "f1", "on\\_threshold\\_w"] in rows
    assert ["**model**", "7.786", "0.8278", "500"] in rows
    assert ["**baseline\\_mean**", "35.97", "0", "500"] in rows
    assert ["mae\\_ratio\\_to\\_baseline", "0.2165"] in rows
    assert "/x" not in text


def test_tabular_metrics_put_model_and_baseline_side_by_side() -> None:
    metrics = {
        "model": {"rows": 1478, "mae": 12676.478, "mdape": 0.1738096},
        "baseline": {"kind": "median per zip_code", "rows": 1478, "mae": 16174.797},
        "mdape_reduction_vs_baseline": 0.0895224,
    }
    rows = table_rows(metrics_markdown(metrics))
    assert ["", "rows", "mae", "mdape", "kind"] in rows
    assert ["**model**", "1,478", "12,676", "0.1738", ""] in rows
    assert ["**baseline**", "1,478", "16,175", "", "median per zip\\_code"] in rows


def test_no_metrics_and_no_registry_are_sentences() -> None:
    assert metrics_markdown({"plots": []}) == "This bundle was exported without evaluation metrics."
    assert registry_markdown({"registry": None}) == NO_REGISTRY
    registry = {
        "name": "eurosat",
        "version": "3",
        "alias": "production",
        "bundle_version": "20261122-120000",
        "forced": False,
        "gates": [
            {
                "name": "metrics",
                "passed": True,
                "summary": "not worse on any of 1 metric(s)",
                "values": {"accuracy": {"holder": 0.71, "candidate": 0.7432, "passed": True}},
            },
            {"name": "latency", "passed": True, "summary": "p95 4.1 ms", "values": {"p95_ms": 4.1}},
        ],
    }
    rows = table_rows(registry_markdown({"registry": registry}))
    assert ["**alias**", "production"] in rows
    assert ["**forced past a failed gate**", "no"] in rows
    assert ["latency", "yes", "p95 4.1 ms"] in rows
    assert ["", "holder", "candidate", "passed"] in rows
    assert ["**accuracy**", "0.71", "0.7432", "yes"] in rows
    assert ["p95\\_ms", "4.1"] in rows


def test_drift_without_realised_accuracy_says_so() -> None:
    verdict: dict[str, Any] = {
        "alert": False,
        "drift": {"detected": False, "share": 0.0, "drifted_columns": [], "columns": {"a": {}}},
        "realised_accuracy": {"pairs": 0, "metrics": {}},
    }
    text = drift_markdown(verdict, "http://127.0.0.1:1/")
    assert text.startswith("**No alert**.")
    assert "no predictions with feedback yet" in text
    assert "| **drifted columns** | none |" in text
    assert "[Open the full drift report](http://127.0.0.1:1/)" in text
