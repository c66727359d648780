"""The image page in a real browser against a real server: a real EuroSAT photo uploaded like a
user shows exactly what ``POST /predict`` answers for the same bytes; a file that is not an image,
one over the server's size limit and a decompression bomb show the server's sentence; the page
works on a phone-sized screen. Plus the page's plain logic without a browser."""

import base64
import html
import importlib.util
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from markdown_it import MarkdownIt
from playwright.sync_api import Browser, Page, expect

from conftest import REPO, shared_datasets_root
from modelyard.core.bundle import MODEL_FILE, Bundle, write_bundle
from modelyard.serving.server_process import free_port, running_server
from modelyard.webui.client import ServerAnswerError, ServerClient
from modelyard.webui.ui_process import running_ui
from modelyard.webui.views import ViewContext
from modelyard.webui.vision_answer import (
    Classified,
    Example,
    image_examples,
    is_plain_name,
    media_type,
    upload_note,
)
from modelyard.webui.vision_view import shipped_examples
from vision_fixtures import bilevel_png, make_vision_bundle, photo

pytest_plugins = ["browser_fixtures"]

EUROSAT_ZIP = shared_datasets_root() / "images" / "eurosat_rgb.zip"
#: The real photo the user uploads (any member of the zip would do).
PHOTO = "EuroSAT_RGB/Forest/Forest_1.jpg"
#: Classes whose first photo the bundle ships as an example, where bundles can hold them.
EXAMPLE_CLASSES = ("River", "SeaLake")
#: Whether this checkout's bundles carry examples (``GET /examples``, issue 17's server part).
SHIPS_EXAMPLES = importlib.util.find_spec("modelyard.core.bundle_examples") is not None
SCREENSHOT = REPO / "docs" / "images" / "ui-vision.png"
SCREENSHOT_VIEWPORT = {"width": 1000, "height": 750}


# -- the page's logic, no browser ------------------------------------------------------------


def test_an_answer_becomes_chart_headline_and_exact_table() -> None:
    body = {
        "top": [{"label": "Forest", "probability": 0.912345}, {"label": "Sea", "probability": 0.05}]
    }
    shown = Classified.from_answer(body, "leaf.jpg", 2737)
    assert shown.chart() == {"Forest": 0.912345, "Sea": 0.05}
    assert shown.headline() == "### Forest · 91.2 %"
    assert table_rows(shown.table()) == [("Forest", 0.912345), ("Sea", 0.05)]
    assert "2,737 bytes" in shown.sent_note()


def test_a_two_class_answer_shows_the_decision_at_the_threshold() -> None:
    top = [{"label": "Forest", "probability": 0.6}, {"label": "SeaLake", "probability": 0.4}]
    decision = {
        "label": "SeaLake",
        "positive_class": "SeaLake",
        "positive_probability": 0.4,
        "threshold": 0.35,
        "is_positive": True,
    }
    shown = Classified.from_answer({"top": top, "decision": decision}, "x.jpg", 1)
    # the decision, not the most probable class: 0.4 passes a 0.35 threshold
    assert shown.headline() == "### SeaLake\n\nSeaLake: 40.0 % ≥ threshold 35.0 %"
    negative = {**decision, "label": "Forest", "threshold": 0.5, "is_positive": False}
    shown = Classified.from_answer({"top": top, "decision": negative}, "x.jpg", 1)
    assert shown.headline() == "### Forest\n\nSeaLake: 40.0 % < threshold 50.0 %"
    with pytest.raises(ValueError, match=r"^The server's answer has a malformed decision"):
        Classified.from_answer({"top": top, "decision": {"label": "x"}}, "x.jpg", 1)


def test_class_and_file_names_show_as_they_are_not_as_markup() -> None:
    labels = ["Potato___Early_blight", "a|b", "*starred*", "x_1.jpg"]
    body = {"top": [{"label": label, "probability": 0.25} for label in labels]}
    shown = Classified.from_answer(body, "leaf_`1`.jpg", 10)
    markdown = MarkdownIt("commonmark").enable("table")
    cells = re.findall(r"<td>(.*?)</td>", markdown.render(shown.table()))
    assert [html.unescape(cell) for cell in cells[::2]] == labels
    headline = html.unescape(re.sub(r"<[^>]+>", "", markdown.render(shown.headline())))
    assert headline.strip() == "Potato___Early_blight · 25.0 %"
    note = html.unescape(re.sub(r"<[^>]+>", "", markdown.render(shown.sent_note())))
    assert note.strip() == "Sent leaf_`1`.jpg (10 bytes, as uploaded)."


@pytest.mark.parametrize("body", [{}, {"top": []}, {"top": [{"label": "x"}]}, ["top"]])
def test_an_answer_without_classes_is_a_sentence(body: Any) -> None:
    with pytest.raises(ValueError, match=r"^The server's answer has .*\.$"):
        Classified.from_answer(body, "x.png", 1)


def test_media_type_comes_from_the_name_and_falls_back_to_bytes() -> None:
    assert media_type("leaf.JPG") == "image/jpeg"
    assert media_type("a.png") == "image/png"
    assert media_type("no-suffix") == "application/octet-stream"


def test_only_plain_named_image_examples_are_offered() -> None:
    listing = {
        "examples": [
            {"name": "forest.jpg", "media_type": "image/jpeg", "description": "Forest"},
            {"name": "day.csv", "media_type": "text/csv", "description": "a day"},
            {"name": "../etc/passwd", "media_type": "image/png", "description": ""},
            {"name": "river.png", "media_type": "image/png"},
            "junk",
        ]
    }
    assert image_examples(listing) == [
        Example("forest.jpg", "image/jpeg", "Forest"),
        Example("river.png", "image/png", ""),
    ]
    assert image_examples({"detail": "Not Found"}) == []
    assert image_examples(None) == []
    assert [e.choice() for e in image_examples(listing)] == [
        ("Forest (forest.jpg)", "forest.jpg"),
        ("river.png", "river.png"),
    ]
    assert not is_plain_name("..") and not is_plain_name("a/b.png") and is_plain_name("b.png")


def test_the_upload_note_quotes_the_servers_limits() -> None:
    note = upload_note({"max_upload_bytes": 10_000_000, "classes": ["a", "b"], "top_k": 3})
    assert note == (
        "Upload, drop or pick an image (JPEG or PNG, up to 10 MB); "
        "the page shows the 3 most probable among 2 classes."
    )


# -- the page in a browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real EuroSAT photo, its file exactly as in the dataset."""
    if not EUROSAT_ZIP.is_file():
        pytest.skip(f"real image dataset not present at {EUROSAT_ZIP} (set MODELYARD_DATA_ROOT)")
    path = tmp_path_factory.mktemp("photo") / Path(PHOTO).name
    with zipfile.ZipFile(EUROSAT_ZIP) as archive:
        path.write_bytes(archive.read(PHOTO))
    return path


def eurosat_classes() -> tuple[str, ...]:
    """The dataset's own class folders, so the served classes are EuroSAT's."""
    with zipfile.ZipFile(EUROSAT_ZIP) as archive:
        names = {Path(n).parts[1] for n in archive.namelist() if len(Path(n).parts) == 3}
    return tuple(sorted(names))


def with_examples(bundle: Bundle) -> Path:
    """``bundle`` again with a few real EuroSAT photos as its examples, as export ships them;
    ``bundle`` itself where this checkout's bundles cannot hold examples yet."""
    if not SHIPS_EXAMPLES:
        return bundle.path
    from modelyard.core.bundle_examples import ExampleFile

    with zipfile.ZipFile(EUROSAT_ZIP) as archive:
        names = archive.namelist()
        members = [next(n for n in names if Path(n).parent.name == c) for c in EXAMPLE_CLASSES]
        examples = [
            ExampleFile(
                name=f"{Path(member).parent.name}-{Path(member).name}",
                media_type="image/jpeg",
                description=f"A test-split image of class {Path(member).parent.name}",
                data=archive.read(member),
            )
            for member in members
        ]
    fields = bundle.manifest.model_dump(exclude={"sha256", "model_file"})
    target = bundle.path.parent / "with-examples"
    return write_bundle(target, bundle.path / MODEL_FILE, fields, examples=examples).path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny real ONNX classifier with EuroSAT's classes (and real photos as its shipped
    examples), served as ``modelyard serve`` does."""
    directory = tmp_path_factory.mktemp("vision") / "bundle"
    if EUROSAT_ZIP.is_file():
        served = with_examples(make_vision_bundle(directory, eurosat_classes()))
    else:  # the refusals and the phone layout need no real photo
        served = make_vision_bundle(directory).path
    with running_server(served, extra_args=["--prediction-log", "none"]) as url:
        yield url


@pytest.fixture(scope="module")
def ui(server: str) -> Iterator[str]:
    with running_ui(server) as url:
        yield url


def upload(page: Page, ui: str, path: Path) -> None:
    page.goto(ui)
    page.locator("#vision-upload input[type=file]").set_input_files(str(path))


def drop(page: Page, ui: str, path: Path) -> None:
    """Drag ``path`` onto the upload area, as a user drops a file from the desktop."""
    page.goto(ui)
    files = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const files = new DataTransfer();
            files.items.add(new File([bytes], name, {type: "image/jpeg"}));
            return files;
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name],
    )
    page.locator("#vision-upload button[aria-label*=drop]").dispatch_event(
        "drop", {"dataTransfer": files}
    )


def table_rows(markdown_or_text: str) -> list[tuple[str, float]]:
    """(class, probability) of the exact table, from its Markdown or the page's text."""
    rows = re.findall(r"^\|?\s*([A-Za-z]\w*)\s*[|\t]\s*([0-9.e-]+)\s*[|\t]", markdown_or_text, re.M)
    return [(label, float(value)) for label, value in rows if label != "class"]


def shown_rows(page: Page) -> list[tuple[str, float]]:
    cells = page.locator("#vision-table tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
    )
    return [(row[0], float(row[1])) for row in cells]


def predicted(server: str, name: str, content: bytes) -> list[tuple[str, float]]:
    """(class, probability) as ``POST /predict`` answers for these bytes, straight over HTTP."""
    answer = httpx.post(f"{server}/predict", files={"file": (name, content)})
    assert answer.status_code == 200, answer.text
    return [(row["label"], row["probability"]) for row in answer.json()["top"]]


def listed_examples(server: str) -> list[Example]:
    answer = httpx.get(f"{server}/examples")
    return image_examples(answer.json()) if answer.status_code == 200 else []


def refusal(server: str, name: str, content: bytes) -> str:
    """The sentence the UI's client makes of the server's refusal of this file."""
    with pytest.raises(ServerAnswerError) as refused:
        ServerClient(server).predict_file(name, content, media_type(name))
    return str(refused.value)


def test_a_real_photo_shows_what_predict_answers(
    page: Page, ui: str, server: str, photo_file: Path
) -> None:
    content = photo_file.read_bytes()
    expected = predicted(server, photo_file.name, content)
    upload(page, ui, photo_file)
    expect(page.locator("#vision-table tbody tr")).to_have_count(len(expected))
    assert shown_rows(page) == expected
    best_label, best_probability = expected[0]
    expect(page.locator("#vision-top")).to_contain_text(
        f"{best_label} · {best_probability * 100:.1f} %"
    )
    chart_labels = page.locator("#vision-chart .label-name, #vision-chart dt").all_inner_texts()
    assert [c.strip() for c in chart_labels if c.strip()] == [label for label, _ in expected]
    # the server got the file byte for byte (a re-encoded image would have another size)
    expect(page.locator("#vision-sent")).to_contain_text(f"{len(content):,} bytes")
    expect(page.locator("#vision-image img")).to_be_visible()
    expect(page.locator("#vision-error")).to_be_hidden()
    # the picker is there exactly when the server lists example images (older servers: 404)
    assert page.locator("#vision-examples").count() == (1 if listed_examples(server) else 0)
    if os.environ.get("MODELYARD_UI_SCREENSHOTS") == "1":
        page.set_viewport_size(SCREENSHOT_VIEWPORT)  # type: ignore[arg-type]
        page.screenshot(path=str(SCREENSHOT))
        assert SCREENSHOT.stat().st_size < 200_000


def test_a_dropped_photo_is_classified(page: Page, ui: str, server: str, photo_file: Path) -> None:
    content = photo_file.read_bytes()
    expected = predicted(server, photo_file.name, content)
    drop(page, ui, photo_file)
    expect(page.locator("#vision-table tbody tr")).to_have_count(len(expected))
    assert shown_rows(page) == expected
    expect(page.locator("#vision-sent")).to_contain_text(f"{len(content):,} bytes")


BAD_FILES = {
    "text renamed .png": ("notes.png", lambda: b"just some text, not pixels\n"),
    "over the server's upload limit": ("huge.jpg", lambda: b"\xff\xd8\xff" + bytes(10_500_000)),
    "decompression bomb": ("bomb.png", lambda: bilevel_png(20_000, 20_000)),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_shows_the_servers_sentence(
    page: Page, ui: str, server: str, tmp_path: Path, case: str
) -> None:
    name, build = BAD_FILES[case]
    content = build()
    path = tmp_path / name
    path.write_bytes(content)
    sentence = refusal(server, name, content)
    upload(page, ui, path)
    error = page.locator("#vision-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(sentence)
    assert "Traceback" not in error.inner_text()
    expect(page.locator("#vision-image img")).to_have_count(0)  # a refused file is not shown
    expect(page.locator("#vision-table tbody tr")).to_have_count(0)


def test_the_page_works_on_a_phone_and_recovers_from_a_refusal(
    browser: Browser, ui: str, server: str, tmp_path: Path
) -> None:
    from browser_fixtures import PHONE  # loaded by pytest_plugins by now (assertions rewritten)

    name, build = BAD_FILES["text renamed .png"]
    (tmp_path / name).write_bytes(build())
    snapshot = tmp_path / "snapshot.jpg"
    snapshot.write_bytes(photo(320, 240))
    context = browser.new_context(viewport=PHONE)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        upload(page, ui, tmp_path / name)
        expect(page.locator("#vision-error")).to_be_visible()
        page.locator("#vision-upload button[aria-label='Clear']").click()
        page.locator("#vision-upload input[type=file]").set_input_files(str(snapshot))
        expected = predicted(server, snapshot.name, snapshot.read_bytes())
        expect(page.locator("#vision-table tbody tr")).to_have_count(len(expected))
        assert shown_rows(page) == expected
        expect(page.locator("#vision-error")).to_be_hidden()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width}px wide on a {PHONE['width']}px screen"
        box = page.locator("#vision-chart").bounding_box()
        assert box is not None and box["width"] <= PHONE["width"]
    finally:
        context.close()


@pytest.mark.skipif(
    not SHIPS_EXAMPLES, reason="this checkout's server has no GET /examples (issue 17 server part)"
)
def test_an_example_shipped_with_the_bundle_is_classified(
    page: Page, ui: str, server: str, photo_file: Path
) -> None:
    """(``photo_file``: the shipped examples are real photos, so the dataset must be there.)"""
    example = listed_examples(server)[0]
    content = httpx.get(f"{server}/examples/{example.name}").content
    expected = predicted(server, example.name, content)
    page.goto(ui)
    page.locator("#vision-example-button").click()
    expect(page.locator("#vision-table tbody tr")).to_have_count(len(expected))
    assert shown_rows(page) == expected
    expect(page.locator("#vision-sent")).to_contain_text(f"{example.name}")
    expect(page.locator("#vision-sent")).to_contain_text(f"{len(content):,} bytes")
    expect(page.locator("#vision-image img")).to_be_visible()


def test_no_examples_where_the_server_cannot_list_them() -> None:
    """An unreachable or older server (404) costs the picker, not the page."""
    context = ViewContext(ServerClient(f"http://127.0.0.1:{free_port()}", timeout_s=2), {})
    assert shipped_examples(context) == []
