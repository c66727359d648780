"""Examples shipped with a bundle: written at export, verified at load, served by a real server.

The NILM example day is chosen from synthetic prepared houses by the real export function; the
vision examples from a real folder of images; the tabular ones by a real (quick) AVM export,
whose served schema also lists the known categories.
"""

import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bundle_factory import APPLIANCES, edit_sealed_manifest, make_nilm_bundle
from modelyard.core.bundle import Bundle, load_bundle
from modelyard.core.bundle_examples import (
    EXAMPLES_DIR,
    MAX_EXAMPLE_BYTES,
    MAX_EXAMPLES,
    ExampleFile,
    write_examples,
)
from modelyard.core.errors import BundleError
from modelyard.projects.nilm.examples import DAY_READINGS, example_day
from modelyard.projects.nilm.preparation import PreparedHouse
from modelyard.projects.tabular.serving import MAX_LISTED_CATEGORIES, category_schema
from modelyard.projects.vision.examples import example_images
from modelyard.projects.vision.image_folders import (
    index_image_folder,
    member_reader,
    stratified_split,
)
from modelyard.serving.server_process import running_server
from tabular_fixtures import build_avm_bundle

KEY = "examples-test-key-0123456789"
MINUTE_NS = 60 * 1_000_000_000
DAY_NS = 1440 * MINUTE_NS


def _house(
    name: str, days: int, busy_day: int, gap_day: int | None, busy_w: float = 500.0
) -> PreparedHouse:
    """``days`` days of one-minute readings starting at 23:00 (the first midnight is reading
    60); appliances draw ``busy_w`` on ``busy_day`` and more on ``gap_day``, which has a gap."""
    n = days * DAY_READINGS + 60
    start = np.datetime64("2026-03-01T23:00", "ns").astype(np.int64)
    times = start + np.arange(n, dtype=np.int64) * MINUTE_NS
    targets = np.full((n, len(APPLIANCES)), 5.0, dtype=np.float32)
    valid = np.ones(n, dtype=bool)

    def day(k: int) -> slice:
        return slice(60 + k * DAY_READINGS, 60 + (k + 1) * DAY_READINGS)

    targets[day(busy_day)] = busy_w
    if gap_day is not None:
        targets[day(gap_day)] = 900.0
        valid[day(gap_day).start + 100] = False
    aggregate = targets.sum(axis=1) + 200.0
    return PreparedHouse(name, 60, APPLIANCES, times, aggregate, targets, valid)


def test_the_nilm_example_is_the_gap_free_day_with_the_most_appliance_energy() -> None:
    from bundle_factory import nilm_contract

    houses = [_house("a", 3, busy_day=0, gap_day=None, busy_w=300), _house("b", 4, 2, gap_day=1)]
    contract = nilm_contract(15, APPLIANCES)
    (example,) = example_day(houses, contract)
    assert example.name == "b-2026-03-04.csv" and example.media_type == "text/csv"
    rows = list(csv.reader(io.StringIO(example.data.decode())))
    assert rows[0] == ["Time", "mains", *APPLIANCES]
    assert len(rows) == 1 + DAY_READINGS == 1441
    assert rows[1][0] == "2026-03-04 00:00:00" and rows[-1][0] == "2026-03-04 23:59:00"
    assert rows[1][1:] == ["1200.0", "500.0", "500.0"]
    assert "1440 readings (24 h) of test house b" in example.description
    # a house lacking one of the bundle's appliances, or without a whole day: no example
    assert example_day([_house("c", 1, 0, None).slice(0, 1000)], contract) == []
    assert example_day(houses, nilm_contract(15, ["kettle", "fridge"])) == []


def _day_csv() -> ExampleFile:
    from bundle_factory import nilm_contract

    return example_day([_house("h", 1, 0, None)], nilm_contract(15, APPLIANCES))[0]


@pytest.fixture(scope="module")
def nilm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    picture = ExampleFile("Sea-1.png", "image/png", "a picture", _png((20, 60, 200)))
    return make_nilm_bundle(
        tmp_path_factory.mktemp("examples") / "bundle", examples=[_day_csv(), picture]
    )


@pytest.fixture(scope="module")
def keyed_server(nilm_bundle: Bundle) -> Iterator[str]:
    with running_server(nilm_bundle.path, env={"MODELYARD_API_KEYS": f"ui:{KEY}"}) as url:
        yield url


def test_served_examples_are_listed_and_downloaded_with_a_key(
    keyed_server: str, nilm_bundle: Bundle
) -> None:
    with httpx.Client(base_url=keyed_server, timeout=10) as client:
        assert client.get("/examples").status_code == 401
        assert client.get("/examples/h-2026-03-02.csv").status_code == 401
        client.headers["X-API-Key"] = KEY
        listed = client.get("/examples").json()
        assert listed == {
            "examples": [
                {
                    "name": "h-2026-03-02.csv",
                    "media_type": "text/csv",
                    "description": "1440 readings (24 h) of test house h from 2026-03-02: "
                    "mains and the metered kettle, microwave",
                },
                {"name": "Sea-1.png", "media_type": "image/png", "description": "a picture"},
            ]
        }
        for item in listed["examples"]:
            answer = client.get(f"/examples/{item['name']}")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith(item["media_type"])
            on_disk = nilm_bundle.path / EXAMPLES_DIR / item["name"]
            assert answer.content == on_disk.read_bytes()
        schema = client.get("/openapi.json").json()
    for path in ("/examples", "/examples/{name}"):
        operation = schema["paths"][path]["get"]
        assert operation["security"] and "401" in operation["responses"]
    assert "404" in schema["paths"]["/examples/{name}"]["get"]["responses"]


@pytest.mark.parametrize(
    "name",
    [
        "nope.csv",
        "manifest.json",
        "model.onnx",
        "..",
        "%2e%2e",
        "..%2fmanifest.json",
        "..%2F..%2Fmanifest.json",
        "%2e%2e%2fmodel.onnx",
        "examples",
        "h-2026-03-02.csv%00",
    ],
)
def test_unknown_and_traversal_names_are_a_404_sentence(keyed_server: str, name: str) -> None:
    answer = httpx.get(f"{keyed_server}/examples/{name}", headers={"X-API-Key": KEY}, timeout=10)
    assert answer.status_code == 404
    assert b"integrity" not in answer.content and b"onnx" not in answer.content[:4]
    detail = answer.json()["detail"]
    # '..' is resolved by the client, a slash after decoding matches no route: no sentence then
    if name != ".." and "%2f" not in name.lower():
        assert detail.startswith("the bundle has no example named")
        assert "examples: h-2026-03-02.csv, Sea-1.png" in detail


def test_a_changed_example_refuses_to_load_like_a_changed_model(
    nilm_bundle: Bundle, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(nilm_bundle.path, copy)
    assert [e.name for e in load_bundle(copy).manifest.examples] == [
        "h-2026-03-02.csv",
        "Sea-1.png",
    ]
    day = copy / EXAMPLES_DIR / "h-2026-03-02.csv"
    original = day.read_bytes()
    day.write_bytes(original.replace(b"1200.0", b"1300.0", 1))
    with pytest.raises(BundleError, match=r"h-2026-03-02.csv failed its integrity check"):
        load_bundle(copy)
    day.unlink()
    with pytest.raises(BundleError, match=r"example h-2026-03-02.csv is missing"):
        load_bundle(copy)
    day.symlink_to(tmp_path / "elsewhere.csv")
    (tmp_path / "elsewhere.csv").write_bytes(original)
    with pytest.raises(BundleError, match=r"is a symbolic link"):
        load_bundle(copy)
    day.unlink()
    day.write_bytes(original)
    load_bundle(copy)
    # the records are under the digest: editing one without re-sealing is refused
    manifest = copy / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["examples"][0]["media_type"] = "text/html"
    manifest.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"changed after export"):
        load_bundle(copy)


def test_an_example_changed_while_served_is_not_sent(nilm_bundle: Bundle, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(nilm_bundle.path, copy)
    with running_server(copy) as url:
        (copy / EXAMPLES_DIR / "Sea-1.png").write_bytes(_png((0, 0, 0)))
        answer = httpx.get(f"{url}/examples/Sea-1.png", timeout=10)
    assert answer.status_code == 500
    assert answer.json() == {
        "detail": "example 'Sea-1.png' changed on the server since the bundle was loaded"
    }


def test_a_bundle_exported_before_examples_lists_none(nilm_bundle: Bundle, tmp_path: Path) -> None:
    copy = tmp_path / "older"
    shutil.copytree(nilm_bundle.path, copy)
    shutil.rmtree(copy / EXAMPLES_DIR)
    edit_sealed_manifest(copy, lambda raw: raw.pop("examples"))
    with running_server(copy) as url:
        assert httpx.get(f"{url}/examples", timeout=10).json() == {"examples": []}
        missing = httpx.get(f"{url}/examples/h-2026-03-02.csv", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["detail"].endswith("(examples: none)")


def test_examples_are_bounded_and_named_plainly(tmp_path: Path) -> None:
    def one(name: str, size: int = 10, media_type: str = "text/csv") -> ExampleFile:
        return ExampleFile(name, media_type, "x", b"x" * size)

    cases = {
        "at most 262144 each": [one("big.csv", MAX_EXAMPLE_BYTES + 1)],
        "at most 524288 together": [one(f"{i}.csv", MAX_EXAMPLE_BYTES) for i in range(3)],
        f"at most {MAX_EXAMPLES}": [one(f"{i}.csv") for i in range(MAX_EXAMPLES + 1)],
        "names repeat": [one("a.csv"), one("a.csv")],
        "not a plain file name": [one("../a.csv")],
        "not an example name": [one(".hidden")],
        "not a media type": [one("a.csv", media_type="text")],
    }
    for index, (error, examples) in enumerate(cases.items()):
        (tmp_path / str(index)).mkdir()
        with pytest.raises(ValueError, match=error):
            write_examples(tmp_path / str(index), examples)


def _png(colour: tuple[int, int, int], size: int = 24) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


def test_vision_examples_are_test_images_of_different_classes_as_their_files(
    tmp_path: Path,
) -> None:
    classes = ["AnnualCrop", "Forest", "Pasture", "River", "Sea"]
    for k, name in enumerate(classes):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for i in range(6):
            image = Image.new("RGB", (32, 32), (40 * k, 10 * i, 90))
            image.save(folder / f"{name}_{i}.jpg", format="JPEG")
    index = index_image_folder(tmp_path / "images")
    test = stratified_split(index.labels, 0.2, 0.1, seed=0)["test"]
    with member_reader(index.source) as read:
        examples = example_images(index, test, read)
    assert [e.name.split("-")[0] for e in examples] == ["AnnualCrop", "Pasture", "Sea"]
    test_members = {index.members[int(row)] for row in test}
    for example in examples:
        member = example.name.split("-", 1)[1]
        klass = example.name.split("-")[0]
        assert f"{klass}/{member}" in test_members
        assert example.data == (tmp_path / "images" / klass / member).read_bytes()
        assert example.media_type == "image/jpeg"
        assert example.description == f"A test-split image of class {klass}"


def test_a_category_list_is_whole_sorted_or_absent() -> None:
    about, listed = category_schema("Danish postal code", {"2100", "800", "10000", "tv"})
    assert listed == ["800", "2100", "10000", "tv"]
    assert about is not None and about.startswith("Danish postal code. Known values listed")
    many = {str(i) for i in range(MAX_LISTED_CATEGORIES + 1)}
    about, listed = category_schema(None, many)
    assert listed is None and about is not None
    assert about.startswith(f"{MAX_LISTED_CATEGORIES + 1} values known from training (too many")
    assert category_schema("Street", set()) == ("Street", None)


@pytest.fixture(scope="module")
def avm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_avm_bundle(tmp_path_factory, rows=300)[1]


def test_the_avm_export_ships_test_rows_and_the_schema_lists_known_categories(
    avm_bundle: Bundle, tmp_path: Path
) -> None:
    from modelyard.projects.tabular.contract import TabularContract

    (record,) = avm_bundle.manifest.examples
    assert record.name == "test-rows.csv" and record.media_type == "text/csv"
    contract = TabularContract.from_manifest(avm_bundle.manifest)
    pipeline = contract.features
    with running_server(avm_bundle.path) as url:
        shipped = httpx.get(f"{url}/examples/test-rows.csv", timeout=10)
        schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
        rows = list(csv.DictReader(io.StringIO(shipped.text)))
        assert list(rows[0]) == contract.schema.features.names()
        assert 1 <= len(rows) <= 5
        body = [_typed(row, contract.schema) for row in rows]
        valued = httpx.post(f"{url}/predict", json=body, timeout=30)
    assert valued.status_code == 200, valued.text
    assert len(valued.json()["predictions"]) == len(rows)

    body_schema = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    row_schema = body_schema["schema"]["anyOf"][0]
    properties = row_schema["properties"]
    for feature in contract.schema.features.categorical:
        known = pipeline.known_categories(feature.name)
        listed = properties[feature.name].get("examples")
        assert listed is not None and set(listed) == known, feature.name
        assert listed == sorted(listed, key=lambda k: (0, int(k), k) if k.isdigit() else (1, 0, k))
        assert "another is valued as unseen" in properties[feature.name]["description"]
    assert "examples" not in properties["area_m2"]


def _typed(row: dict[str, str], schema: object) -> dict[str, object]:
    """A CSV row as the JSON a client sends: numbers as numbers, empty cells left out."""
    from modelyard.projects.tabular.schema import TableSchema

    assert isinstance(schema, TableSchema)
    numeric = {f.name for f in schema.features.numeric}
    return {k: (float(v) if k in numeric else v) for k, v in row.items() if v != ""}


def test_the_examples_do_not_change_what_the_server_imports() -> None:
    code = (
        "import sys, modelyard.serving.app, modelyard.serving.examples_api;"
        "print(sorted(m for m in ('pandas', 'gradio', 'torch', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "[]", done.stderr
