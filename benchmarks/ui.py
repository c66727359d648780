"""Web UI benchmark: what a person waits for, what the UI costs the server beside it, its memory.

For each bundle given (``--bundle FAMILY=PATH``; NILM, tabular, vision), against a real
``modelyard serve`` and a real ``modelyard app`` on 127.0.0.1, in Debian's headless chromium:

* **first result**: seconds from ``page.goto`` in a fresh browser context (nothing cached) until
  the family's result is in the DOM, for the family's flow: NILM uploads a day (1,440 readings)
  of mains as CSV and runs it (until the energy table and the chart's line are drawn); tabular
  fills the form with the bundle's example row and submits (until the answer shows a number);
  vision uploads a 256 x 256 JPEG (until the top-k table has rows). Median of ``--repeats``.
* **throughput beside the UI**: the server's small-request throughput (the bundle's own example
  request, ``benchmarks/loadgen.py`` with 8 keep-alive clients) with and without a ``modelyard
  app`` process running beside it (started, a page open on it for ``SETTLE_S``), in alternating
  rounds; the ratio of the medians, and the CPU time the UI process used while the load ran.
* **UI memory**: resident memory of the ``modelyard app`` process when it has started, after the
  first page load and flow, and after all the repeated flows.

    .venv/bin/python benchmarks/ui.py --bundle nilm=BUNDLE --bundle tabular=BUNDLE \
        --bundle vision=BUNDLE

The family pages drive the element ids of the views (``#nilm-upload``, ``#tabular-submit``,
``#vision-upload`` ...); results go to ``benchmarks/results/ui.json``.
"""

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from bench_common import write_results
from modelyard.core.bundle import load_bundle
from modelyard.serving.adapter import bundle_example
from modelyard.serving.server_process import running_server
from modelyard.webui.ui_process import CHROMIUM_ARGS, child_commands, running_ui
from serving import load, resident_mb

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
WAIT_MS = 60_000
DAY = 1440
LOAD_CLIENTS = 8
#: Seconds between opening the page and the load: the page's own loading (its assets, the model
#: tab's reads of /info) is over, as when a user has the page open while the server works.
SETTLE_S = 5.0

#: A family's flow on an open page; returns the seconds from the action that sends the request
#: (the click, or the image upload) until the result is drawn.
Flow = Callable[[Page, Path], float]


def nilm_input(scratch: Path, _: Any) -> Path:
    """A day of 1-minute mains readings with a kettle and a washing cycle, as ``Time,mains``."""
    rng = np.random.default_rng(0)
    watts = rng.uniform(150.0, 450.0, DAY)
    watts[420:424] += 2800.0
    watts[900:990] += 500.0
    path = scratch / "mains-day.csv"
    start = np.datetime64("2014-06-01T00:00")
    lines = ["Time,mains"] + [
        f"{start + np.timedelta64(minute, 'm')},{watts[minute]:.1f}" for minute in range(DAY)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def vision_input(scratch: Path, _: Any) -> Path:
    y, x = np.mgrid[0:256, 0:256]
    pixels = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    path = scratch / "photo.jpg"
    path.write_bytes(buffer.getvalue())
    return path


def tabular_input(scratch: Path, example: Any) -> Path:
    """The bundle's example row, one ``name=value`` a line (what the flow types into the form)."""
    row = example[0] if isinstance(example, list) else example
    path = scratch / "row.txt"
    path.write_text("\n".join(f"{k}={v}" for k, v in row.items() if v is not None) + "\n")
    return path


def nilm_flow(page: Page, day: Path) -> float:
    page.locator("#nilm-upload input[type=file]").set_input_files(str(day))
    page.locator(f'#nilm-upload a[download="{day.name}"]').wait_for()
    clicked = time.perf_counter()
    page.locator("#nilm-run").click()
    page.locator("#nilm-energy-table").wait_for()
    page.locator("#nilm-chart g.mark-line path").first.wait_for()
    return time.perf_counter() - clicked


def tabular_flow(page: Page, row: Path) -> float:
    for line in row.read_text().splitlines():
        name, value = line.split("=", 1)
        box = page.locator(f"#tabular-field-{name}").locator("input, textarea").first
        box.fill(value)
        box.press("Enter")
    clicked = time.perf_counter()
    page.locator("#tabular-submit").click()
    page.wait_for_function(
        "() => /\\d/.test(document.querySelector('#tabular-answer')?.innerText ?? '')"
    )
    return time.perf_counter() - clicked


def vision_flow(page: Page, image: Path) -> float:
    uploaded = time.perf_counter()
    page.locator("#vision-upload input[type=file]").set_input_files(str(image))
    page.locator("#vision-table tbody tr").first.wait_for()
    return time.perf_counter() - uploaded


FLOWS: dict[str, tuple[Callable[[Path, Any], Path], Flow, str]] = {
    "nilm": (nilm_input, nilm_flow, "#nilm-upload"),
    "tabular": (tabular_input, tabular_flow, "#tabular-submit"),
    "vision": (vision_input, vision_flow, "#vision-upload"),
}


def first_result_s(browser: Browser, url: str, family: str, material: Path) -> tuple[float, float]:
    """One cold page load and the family's flow, in a fresh context: seconds from ``goto`` to
    the result, and from the action that sends the request to the result."""
    _, flow, ready = FLOWS[family]
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        started = time.perf_counter()
        page.goto(url)
        page.locator(ready).wait_for()
        answer_s = flow(page, material)
        return time.perf_counter() - started, answer_s
    finally:
        context.close()


def ui_pid(url: str) -> int:
    """The ``modelyard app`` child of this process serving ``url``."""
    port = url.rsplit(":", 1)[1]
    for pid, arguments in child_commands(os.getpid()).items():
        if "app" in arguments and port in arguments:
            return pid
    raise RuntimeError(f"no modelyard app process for {url}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_body(bundle: Path, scratch: Path) -> tuple[Path, int, str]:
    """The bundle's own example request as a body file for ``loadgen.py``."""
    request = httpx.Request(
        "POST", "http://x/predict", **bundle_example(load_bundle(bundle)).httpx_arguments()
    )
    path = scratch / "small.body"
    path.write_bytes(request.read())
    return path, 1, request.headers["content-type"]


@contextmanager
def page_open(browser: Browser, url: str, open_page: bool = True) -> Iterator[None]:
    """A browser tab showing the UI, as a user would leave it open while the server works
    (``open_page`` False: none, the UI process alone, after the same settling time)."""
    if not open_page:
        time.sleep(SETTLE_S)
        yield
        return
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(url)
    time.sleep(SETTLE_S)
    try:
        yield
    finally:
        context.close()


def bench_family(
    browser: Browser, family: str, bundle: Path, args: argparse.Namespace
) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix=f"ui-bench-{family}-"))
    example = bundle_example(load_bundle(bundle)).json
    material = FLOWS[family][0](scratch, example)
    body = load_body(bundle, scratch)
    result: dict[str, Any] = {"bundle": str(bundle)}
    with running_server(bundle, extra_args=["--prediction-log", "none"]) as server:
        port = int(server.rsplit(":", 1)[1])
        with running_ui(server) as url:
            pid = ui_pid(url)
            memory = {"started": resident_mb(pid)["total"]}
            timings = [first_result_s(browser, url, family, material)]
            memory["after_first_flow"] = resident_mb(pid)["total"]
            timings += [
                first_result_s(browser, url, family, material) for _ in range(args.repeats - 1)
            ]
            memory[f"after_{args.repeats}_flows"] = resident_mb(pid)["total"]
        for key, values in (
            ("first_result_s", [total for total, _ in timings]),
            ("answer_s", [answer for _, answer in timings]),
        ):
            result[key] = {
                "median": round(statistics.median(values), 3),
                "all": [round(t, 3) for t in values],
            }
        result["ui_rss_mb"] = memory
        throughput: dict[str, list[float]] = {"without_ui": [], "with_ui": [], "ui_cpu_s": []}
        for _ in range(args.rounds):
            throughput["without_ui"].append(
                load(port, body, LOAD_CLIENTS, args.seconds, None)["requests_per_s"]
            )
            with running_ui(server) as url, page_open(browser, url, args.page):
                pid = ui_pid(url)
                before = cpu_seconds(pid)
                throughput["with_ui"].append(
                    load(port, body, LOAD_CLIENTS, args.seconds, None)["requests_per_s"]
                )
                throughput["ui_cpu_s"].append(round(cpu_seconds(pid) - before, 2))
        without, beside = (statistics.median(throughput[k]) for k in ("without_ui", "with_ui"))
        result["throughput_rps"] = {
            **throughput,
            "clients": LOAD_CLIENTS,
            "seconds": args.seconds,
            "ratio_with_to_without": round(beside / without, 3),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--bundle", action="append", required=True, help="FAMILY=PATH (nilm, tabular, vision)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="page loads per family")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of load per round")
    parser.add_argument("--name", default="ui", help="results file name (without .json)")
    parser.add_argument(
        "--page",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep a browser page open on the UI during the load rounds",
    )
    args = parser.parse_args()
    bundles = dict(item.split("=", 1) for item in args.bundle)
    unknown = set(bundles) - set(FLOWS)
    if unknown:
        sys.exit(f"unknown family {sorted(unknown)}; known: {sorted(FLOWS)}")
    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "families": {}}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        for family, bundle in bundles.items():
            results["families"][family] = bench_family(browser, family, Path(bundle), args)
            print(family, results["families"][family], flush=True)
        browser.close()
    print(write_results(args.name, results))


if __name__ == "__main__":
    main()
