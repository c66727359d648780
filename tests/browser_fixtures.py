"""A real headless browser for the web UI's tests: Debian's chromium driven by Playwright's
Python client (Playwright's own browser download is not used; ``make test`` installs chromium)."""

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from modelyard.webui.ui_process import CHROMIUM_ARGS

#: A phone-sized viewport (the page must work on a narrow screen) and a desktop one.
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
#: Milliseconds any single browser wait may take before the test fails.
WAIT_MS = 30_000


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run `make test` (as root it installs it)")
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=list(CHROMIUM_ARGS)
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    yield opened
    context.close()
