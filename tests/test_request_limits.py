"""Validation cost is bounded and the request schema says exactly what is enforced (issue 14).

Amplification bodies (millions of nulls or empty rows, a 15 MB string) against real servers on
127.0.0.1: each is refused with a 4xx within a second and a small body, the server's peak
resident memory stays within 200 MiB of the idle server's, and ``/health`` keeps answering
within 100 ms meanwhile. Before the limits were counted on the raw bytes, three million nulls
took 19 s and 4 GB, and ``/health`` waited the whole time.

Then the declared schema: lengths, row counts, string lengths and date formats appear in the
OpenAPI document and are enforced as declared; errors are capped and never echo the input.
"""

import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bundle_factory import MAX_LENGTH, make_nilm_bundle
from modelyard.core.bundle import Bundle
from modelyard.serving.app import create_app
from modelyard.serving.http_checks import MAX_ERROR_TEXT, MAX_REPORTED_ERRORS
from modelyard.serving.server_process import running_server
from resource_probe import HealthSampler, memory, reset_peak, server_pid
from tabular_fixtures import VALID_ROW, build_avm_bundle
from vision_fixtures import make_vision_bundle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

WINDOW = 15
JSON = {"content-type": "application/json"}
MIB = 1024 * 1024
#: What the issue requires of each refusal, and of the server while it refuses.
ANSWER_WITHIN_S = 1.0
PEAK_GROWTH_MIB = 200.0
HEALTH_WITHIN_S = 0.1
#: A busy machine (two shared cores) may delay a few probe answers by itself: up to this share
#: of them may be slower, none by more than a second (a blocked loop is blocked for seconds).
HEALTH_SLOW_SHARE = 0.05
HEALTH_CEILING_S = 1.0
ROW = VALID_ROW


@dataclass(frozen=True)
class Served:
    url: str
    pid: int


def served(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {"MODELYARD_HOME": str(tmp_path_factory.mktemp("home"))}
    with running_server(bundle.path, env=env) as url:
        yield Served(url, server_pid(urlsplit(url).port or 0))


@pytest.fixture(scope="module")
def nilm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(tmp_path_factory.mktemp("nilm") / "bundle", window=WINDOW)


@pytest.fixture(scope="module")
def tabular_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_avm_bundle(tmp_path_factory, rows=300)[1]


@pytest.fixture(scope="module")
def nilm_server(nilm_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from served(nilm_bundle, tmp_path_factory)


@pytest.fixture(scope="module")
def tabular_server(
    tabular_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    yield from served(tabular_bundle, tmp_path_factory)


def repeated(item: bytes, count: int) -> bytes:
    """``item,item,...`` (``count`` times)."""
    return b",".join([item] * count)


def huge(text: str) -> bytes:
    """A 15 MB string, as JSON."""
    return b'"' + text.encode() * (15 * MIB // len(text)) + b'"'


NILM_ATTACKS = {
    "3M nulls (15 MB)": b'{"aggregate_w": [' + repeated(b"null", 3_000_000) + b"]}",
    "3K nulls (within the byte limit)": b'{"aggregate_w": [' + repeated(b"null", 3_000) + b"]}",
    "15 MB start": b'{"aggregate_w": [1.0], "start": ' + huge("2013") + b"}",
    "15 MB unknown field": b'{"aggregate_w": [1.0], ' + huge("k") + b": 1}",
    "3M nested lists": b'{"aggregate_w": [' + repeated(b"[]", 3_000_000) + b"]}",
}
TABULAR_ATTACKS = {
    "1M empty rows (3 MB)": b"[" + repeated(b"{}", 1_000_000) + b"]",
    "3M empty rows (9 MB)": b"[" + repeated(b"{}", 3_000_000) + b"]",
    "200K empty rows (within the byte limit)": b"[" + repeated(b"{}", 200_000) + b"]",
    "1M nulls": b"[" + repeated(b"null", 1_000_000) + b"]",
    "15 MB zip code": json.dumps({**ROW, "zip_code": "@"}).encode().replace(b'"@"', huge("2100")),
    "1001 rows": json.dumps([ROW] * 1001).encode(),
}


def chunked(body: bytes, size: int = 65536) -> Iterator[bytes]:
    """``body`` in pieces: httpx sends it with ``Transfer-Encoding: chunked``."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def attack(server: Served, bodies: dict[str, bytes], valid: Any) -> None:
    """Send each body while /health is sampled; check answers, peak memory and probe latency."""
    with httpx.Client(base_url=server.url, timeout=120.0) as client:
        assert client.post("/predict", json=valid).status_code == 200  # warm code paths
        for body in bodies.values():  # and the refusals' own, once each
            client.post("/predict", content=body[:2048], headers=JSON)
        idle = memory(server.pid).rss_mib
        assert reset_peak(server.pid), "cannot reset VmHWM here; peak would count from start"
        answers = {}
        with HealthSampler(server.url) as health:
            time.sleep(0.2)
            for name, body in bodies.items():
                # with a Content-Length, and chunked (the size is known only while reading)
                for way, content in (("sized", body), ("chunked", chunked(body))):
                    started = time.perf_counter()
                    response = client.post("/predict", content=content, headers=JSON)
                    answers[f"{name}, {way}"] = (response, time.perf_counter() - started)
            time.sleep(0.2)
        peak = memory(server.pid).peak_mib
    for name, (response, seconds) in answers.items():
        assert 400 <= response.status_code < 500, (name, response.status_code)
        assert seconds < ANSWER_WITHIN_S, f"{name}: answered after {seconds:.1f} s"
        assert len(response.content) < 4096, f"{name}: {len(response.content)} bytes of error"
        assert response.json()["detail"]
    assert peak - idle < PEAK_GROWTH_MIB, f"peak {peak:.0f} MiB, idle {idle:.0f} MiB"
    assert not health.failures, health.failures[:3]
    assert len(health.latencies_s) >= 10, "too few /health samples to judge"
    slow = health.slow(HEALTH_WITHIN_S)
    assert len(slow) <= HEALTH_SLOW_SHARE * len(health.latencies_s) + 1, sorted(slow)[-5:]
    assert max(health.latencies_s) < HEALTH_CEILING_S, max(health.latencies_s)


def test_nilm_amplification_is_refused_fast_and_small(nilm_server: Served) -> None:
    attack(nilm_server, NILM_ATTACKS, {"aggregate_w": [300.0] * 100})


def test_tabular_amplification_is_refused_fast_and_small(tabular_server: Served) -> None:
    attack(tabular_server, TABULAR_ATTACKS, [ROW])


# --- the schema says what is enforced ------------------------------------------------------------


@pytest.fixture(scope="module")
def nilm(nilm_bundle: Bundle) -> TestClient:
    return TestClient(create_app(nilm_bundle), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def tabular(tabular_bundle: Bundle) -> TestClient:
    return TestClient(create_app(tabular_bundle), raise_server_exceptions=False)


def request_schema(client: TestClient) -> dict[str, Any]:
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    return operation["requestBody"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def test_nilm_schema_declares_the_series_limits_it_enforces(nilm: TestClient) -> None:
    series = request_schema(nilm)["properties"]["aggregate_w"]
    assert (series["minItems"], series["maxItems"]) == (WINDOW, MAX_LENGTH)
    readings = [300.0] * MAX_LENGTH
    assert nilm.post("/predict", json={"aggregate_w": readings}).status_code == 200
    too_long = nilm.post("/predict", json={"aggregate_w": [*readings, 300.0]})
    assert too_long.status_code == 422
    assert f"has {MAX_LENGTH + 1} readings" in too_long.json()["detail"]


@pytest.mark.parametrize("start", [0, 1370070000, 1.5e9, True, "2013-06-01"])
def test_nilm_start_is_an_iso_datetime_string_only(nilm: TestClient, start: Any) -> None:
    assert request_schema(nilm)["properties"]["start"]["anyOf"][0]["format"] == "date-time"
    response = nilm.post("/predict", json={"aggregate_w": [300.0] * WINDOW, "start": start})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "start"]


def test_nilm_interval_is_a_json_integer_only(nilm: TestClient) -> None:
    response = nilm.post("/predict", json={"aggregate_w": [300.0] * WINDOW, "interval_s": "60"})
    assert response.status_code == 422


def tabular_row_schema(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    options = request_schema(client)["anyOf"]
    (row,) = [o for o in options if o["type"] == "object"]
    (rows,) = [o for o in options if o["type"] == "array"]
    return row, rows


def test_tabular_schema_declares_rows_strings_and_dates(tabular: TestClient) -> None:
    row, rows = tabular_row_schema(tabular)
    assert (rows["minItems"], rows["maxItems"]) == (1, 1000)
    zip_options = row["properties"]["zip_code"]["anyOf"]
    assert {"type": "string", "maxLength": 100} in zip_options
    assert {"type": "integer", "minimum": -(2**53 - 1), "maximum": 2**53 - 1} in zip_options
    assert row["properties"]["sale_date"]["format"] == "date"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sale_date", 0),
        ("sale_date", 1634256000),
        ("sale_date", "2021-10-15T00:00:00"),
        ("sale_date", "20211015"),
        ("zip_code", 18446744073709551616),  # above 64 bits: the prediction log cannot store it
        ("zip_code", 2**53),
        ("zip_code", "2" * 101),
        ("zip_code", True),
    ],
)
def test_tabular_values_outside_the_declared_schema_are_a_422(
    tabular: TestClient, field: str, value: Any
) -> None:
    response = tabular.post("/predict", json={**ROW, field: value})
    assert response.status_code == 422, response.text
    assert all(error["loc"][:2] == ["body", field] for error in response.json()["detail"])


def test_tabular_largest_declared_values_are_accepted(tabular: TestClient) -> None:
    for zip_code in (2**53 - 1, -(2**53 - 1), "2" * 100):
        response = tabular.post("/predict", json={**ROW, "zip_code": zip_code})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("body", [b'{"area_m2": \xff\xfe}', b"\xff", b"[{", b""])
def test_tabular_invalid_utf8_and_json_are_a_422(tabular: TestClient, body: bytes) -> None:
    response = tabular.post("/predict", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_invalid_utf8_is_a_422_for_nilm(nilm: TestClient) -> None:
    response = nilm.post(
        "/predict", content=b'{"aggregate_w": [1, 2], "edges": "\xff"}', headers=JSON
    )
    assert response.status_code == 422


def test_reported_errors_are_capped_and_counted(tabular: TestClient) -> None:
    rows = [{**ROW, "area_m2": "big"} for _ in range(50)]
    body = tabular.post("/predict", json=rows).json()
    assert len(body["detail"]) == MAX_REPORTED_ERRORS
    assert body["error_count"] == 50


def test_errors_never_echo_long_inputs(tabular: TestClient, nilm: TestClient) -> None:
    key = "k" * 10_000  # an unknown field: its name is part of the error's location
    for client, body in (
        (tabular, {**ROW, key: 1}),
        (nilm, {"aggregate_w": [1.0] * WINDOW, key: 1}),
    ):
        response = client.post("/predict", json=body)
        assert response.status_code == 422
        assert len(response.content) < 2 * MAX_ERROR_TEXT + 200, response.text[:300]


def test_every_refusal_is_declared_in_the_route_responses(
    tabular: TestClient, nilm: TestClient
) -> None:
    for client in (tabular, nilm):
        operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
        assert {"413", "415", "422"} <= set(operation["responses"])
        assert "$ref" in operation["responses"]["422"]["content"]["application/json"]["schema"]


def test_brackets_and_commas_inside_strings_are_not_counted(tabular: TestClient) -> None:
    """The raw-byte counts skip strings (escaped quotes and backslashes included): the largest
    valid body, full of JSON punctuation inside its texts, is accepted."""
    side = '\\"{[,' * 20  # 100 characters: backslash, quote, brace, bracket, comma
    response = tabular.post("/predict", json=[{**ROW, "side": side}] * 1000)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == 1000


@pytest.mark.parametrize(
    "body",
    [
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="\xff.png"\r\n\r\n'
        b"\xff\xfe\r\n--x--\r\n",
        b'--x\r\nContent-Disposition: form-data; name="\xff"\r\n\r\nabc\r\n--x--\r\n',
        b"\xff\xfe",
    ],
    ids=["bad file name and bytes", "bad field name", "not multipart at all"],
)
def test_invalid_utf8_is_a_422_for_images(
    tmp_path_factory: pytest.TempPathFactory, body: bytes
) -> None:
    bundle = make_vision_bundle(tmp_path_factory.mktemp("vision") / "bundle")
    client = TestClient(create_app(bundle), raise_server_exceptions=False)
    headers = {"content-type": "multipart/form-data; boundary=x"}
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == 422, response.text
