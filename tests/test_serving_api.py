"""The HTTP API of a served bundle: real ONNX Runtime, in-process and over real HTTP.

Request checks run twice: through FastAPI's TestClient (in-process) and against a real uvicorn
server on 127.0.0.1, because raw bytes such as ``NaN`` or a missing content type must be handled
the same way once they have crossed a socket.
"""

import itertools
import json
import math
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from bundle_factory import AGGREGATE_LIMIT_W, INTERVAL_S, MAX_LENGTH, VERSION, make_nilm_bundle
from modelyard import __version__
from modelyard.core.bundle import Bundle, load_bundle
from modelyard.core.hashing import sha256_file
from modelyard.projects.nilm.inference import predict_series
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.serving.app import create_app
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server

with warnings.catch_warnings():
    # Starlette's TestClient warns at import that it would prefer httpx2; httpx works.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

WINDOW = 15
APPLIANCES = ("kettle", "microwave")
HALF = WINDOW // 2
JSON = {"content-type": "application/json"}


def mains(length: int, seed: int = 0) -> list[float]:
    """A plausible mains series: a base load with a few kettle-sized steps."""
    rng = np.random.default_rng(seed)
    series = rng.uniform(150.0, 450.0, length)
    series[length // 3 : length // 3 + 4] += 2800.0
    return [round(float(v), 1) for v in series]


def numbers(values: list[float]) -> str:
    return ",".join(repr(v) for v in values)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    path = tmp_path_factory.mktemp("serving") / "bundle"
    make_nilm_bundle(path, window=WINDOW, appliances=APPLIANCES)
    return load_bundle(path)


@pytest.fixture(scope="module")
def app(bundle: Bundle) -> FastAPI:
    return create_app(bundle)


@pytest.fixture(scope="module")
def test_client(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def http_client(bundle: Bundle) -> Iterator[httpx.Client]:
    with running_server(bundle.path) as url, httpx.Client(base_url=url, timeout=10.0) as client:
        yield client


@pytest.fixture(params=["in-process", "http"])
def client(request: pytest.FixtureRequest) -> httpx.Client:
    """The same checks against TestClient and against the real server."""
    name = "test_client" if request.param == "in-process" else "http_client"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def reference(bundle: Bundle) -> Any:
    """What evaluation computes for a series: predict_series with the bundle's ONNX model."""
    model = OnnxModel(bundle.model_path)
    norm = Normalisation.from_json(bundle.manifest.preprocessing["normalisation"])

    def run(series: list[float]) -> np.ndarray:
        return predict_series(np.asarray(series, dtype=np.float64), model.run, norm, WINDOW)

    return run


def post_raw(client: httpx.Client, body: str | bytes, content_type: str | None) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/predict", content=body, headers=headers)


def predicted(response: httpx.Response) -> np.ndarray:
    """(length, appliances) array from a /predict response, in the bundle's appliance order."""
    body = response.json()
    return np.column_stack([body["appliances"][a] for a in APPLIANCES])


# --- service routes --------------------------------------------------------------------------


def test_health(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_info_describes_the_served_bundle(client: httpx.Client, bundle: Bundle) -> None:
    response = client.get("/info")

    assert response.status_code == 200
    info = response.json()
    assert info["project"] == "nilm"
    assert info["task"] == "nilm"
    assert info["name"] == "nilm-seq2point"
    assert info["version"] == VERSION
    assert info["sha256"] == sha256_file(bundle.model_path)
    assert info["modelyard_version"] == __version__
    assert info["inputs"][0]["shape"] == ["batch", WINDOW]
    assert info["details"]["window"] == WINDOW
    assert info["details"]["interval_s"] == INTERVAL_S
    assert info["details"]["appliances"] == list(APPLIANCES)
    assert info["details"]["min_length"] == WINDOW
    assert info["details"]["max_length"] == MAX_LENGTH
    assert info["details"]["max_aggregate_w"] == AGGREGATE_LIMIT_W


def test_unknown_route_and_wrong_method(test_client: TestClient) -> None:
    assert test_client.get("/nope").status_code == 404
    assert test_client.get("/predict").status_code == 405


# --- happy path ------------------------------------------------------------------------------


def test_predict_returns_one_value_per_reading_and_appliance(client: httpx.Client) -> None:
    series = mains(60)
    response = client.post("/predict", json={"aggregate_w": series, "interval_s": INTERVAL_S})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "nilm-seq2point"
    assert body["version"] == VERSION
    assert body["interval_s"] == INTERVAL_S
    assert body["length"] == len(series)
    assert body["edge_readings"] == HALF
    assert body["timestamps"] is None
    assert list(body["appliances"]) == list(APPLIANCES)
    for values in body["appliances"].values():
        assert len(values) == len(series)
        assert all(math.isfinite(v) and v >= 0.0 for v in values)
        assert all(round(v, 2) == v for v in values)


def test_predict_matches_what_evaluation_computes(client: httpx.Client, reference: Any) -> None:
    series = mains(200, seed=3)
    response = client.post("/predict", json={"aggregate_w": series})

    assert response.status_code == 200, response.text
    expected = reference(series)
    assert expected.shape == (200, len(APPLIANCES))
    # The response rounds to 0.01 W.
    np.testing.assert_allclose(predicted(response), expected, rtol=0, atol=0.0051)
    # Not vacuous: the model's output varies along the series and is not all clipped to 0.
    assert np.ptp(expected, axis=0).min() > 0.1


def test_predictions_depend_on_the_input(client: httpx.Client) -> None:
    first = client.post("/predict", json={"aggregate_w": mains(40, seed=1)})
    second = client.post("/predict", json={"aggregate_w": mains(40, seed=2)})

    assert first.status_code == second.status_code == 200
    assert not np.allclose(predicted(first), predicted(second))


def test_shortest_and_longest_accepted_series(client: httpx.Client, reference: Any) -> None:
    for length in (WINDOW, MAX_LENGTH):
        series = mains(length)
        response = client.post("/predict", json={"aggregate_w": series})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(predicted(response), reference(series), rtol=0, atol=0.0051)


@pytest.mark.parametrize(
    ("start", "first"),
    [
        ("2013-06-01T07:00:00", datetime(2013, 6, 1, 7, 0)),
        ("2013-06-01T07:00:00Z", datetime.fromisoformat("2013-06-01T07:00:00+00:00")),
    ],
)
def test_timestamps_follow_start_at_the_model_interval(
    client: httpx.Client, start: str, first: datetime
) -> None:
    series = mains(30)
    response = client.post("/predict", json={"aggregate_w": series, "start": start})

    assert response.status_code == 200, response.text
    stamps = [
        datetime.fromisoformat(t.replace("Z", "+00:00")) for t in response.json()["timestamps"]
    ]
    assert len(stamps) == len(series)
    assert stamps[0] == first
    assert {b - a for a, b in itertools.pairwise(stamps)} == {timedelta(seconds=INTERVAL_S)}


def test_negative_readings_are_treated_as_zero(client: httpx.Client, reference: Any) -> None:
    series = mains(50)
    series[10:20] = [-800.0] * 10
    clipped = [max(v, 0.0) for v in series]

    negative = client.post("/predict", json={"aggregate_w": series})
    zeroed = client.post("/predict", json={"aggregate_w": clipped})

    assert negative.status_code == zeroed.status_code == 200
    assert negative.json()["appliances"] == zeroed.json()["appliances"]
    # Not vacuous: the model would answer differently if the negatives reached it.
    assert not np.allclose(reference(series), reference(clipped), atol=0.01)


def test_application_json_with_charset_is_json(client: httpx.Client) -> None:
    body = json.dumps({"aggregate_w": mains(20)})
    response = post_raw(client, body, "application/json; charset=utf-8")
    assert response.status_code == 200, response.text


# --- bad requests: always a 4xx with a JSON detail, never a 500 --------------------------------

_OK = numbers(mains(20))
J = "application/json"

BAD_REQUESTS: list[tuple[str, str | bytes, str | None, int]] = [
    ("string in list", f'{{"aggregate_w": [{_OK}, "abc"]}}', J, 422),
    ("numeric string", f'{{"aggregate_w": [{_OK}, "100"]}}', J, 422),
    ("boolean in list", f'{{"aggregate_w": [{_OK}, true]}}', J, 422),
    ("null in list", f'{{"aggregate_w": [{_OK}, null]}}', J, 422),
    ("nested list", f'{{"aggregate_w": [{_OK}, [1]]}}', J, 422),
    ("series is a string", '{"aggregate_w": "100,200"}', J, 422),
    ("NaN", f'{{"aggregate_w": [NaN, {_OK}]}}', J, 422),
    ("Infinity", f'{{"aggregate_w": [{_OK}, Infinity]}}', J, 422),
    ("-Infinity", f'{{"aggregate_w": [{_OK}, -Infinity]}}', J, 422),
    ("overflowing number", f'{{"aggregate_w": [{_OK}, 1e999]}}', J, 422),
    ("huge integer", f'{{"aggregate_w": [{_OK}, 1{"0" * 400}]}}', J, 422),
    ("integer too long to parse", f'{{"aggregate_w": [1{"0" * 5000}]}}', J, 422),
    ("empty body", "", J, 422),
    ("invalid JSON", '{"aggregate_w": [1, 2', J, 422),
    ("not UTF-8", b'{"aggregate_w": [\xff\xfe]}', J, 422),
    ("deeply nested JSON", "[" * 5_000 + "]" * 5_000, J, 422),
    ("JSON array body", f"[{_OK}]", J, 422),
    ("JSON null body", "null", J, 422),
    ("missing aggregate_w", '{"interval_s": 60}', J, 422),
    ("text/plain", f'{{"aggregate_w": [{_OK}]}}', "text/plain", 415),
    ("form content type", "aggregate_w=1", "application/x-www-form-urlencoded", 415),
    ("no content type", f'{{"aggregate_w": [{_OK}]}}', None, 415),
    ("unknown field", f'{{"aggregate_w": [{_OK}], "house": 2}}', J, 422),
    ("wrong interval", f'{{"aggregate_w": [{_OK}], "interval_s": 6}}', J, 422),
    ("fractional interval", f'{{"aggregate_w": [{_OK}], "interval_s": 60.5}}', J, 422),
    ("start not a date", f'{{"aggregate_w": [{_OK}], "start": "soon"}}', J, 422),
    ("start too late", f'{{"aggregate_w": [{_OK}], "start": "9999-12-31T23:59:00"}}', J, 422),
    ("above the aggregate limit", f'{{"aggregate_w": [{_OK}, 23000.5]}}', J, 422),
    ("too short", f'{{"aggregate_w": [{numbers(mains(WINDOW - 1))}]}}', J, 422),
    ("too long", f'{{"aggregate_w": [{numbers(mains(MAX_LENGTH + 1))}]}}', J, 422),
    ("empty series", '{"aggregate_w": []}', J, 422),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [pytest.param(body, ct, status, id=name) for name, body, ct, status in BAD_REQUESTS],
)
def test_bad_requests_get_a_precise_4xx(
    client: httpx.Client, body: str | bytes, content_type: str | None, status: int
) -> None:
    response = post_raw(client, body, content_type)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"aggregate_w": mains(WINDOW - 1)}, f"between {WINDOW} and {MAX_LENGTH}"),
        ({"aggregate_w": mains(MAX_LENGTH + 1)}, f"has {MAX_LENGTH + 1} readings"),
        ({"aggregate_w": mains(20), "interval_s": 30}, "readings every 60 s"),
        ({"aggregate_w": [*mains(20), 30000.0]}, "physical limit of 23000 W"),
        ({"aggregate_w": mains(20), "start": "9999-12-31T23:59:00"}, "start is too late"),
    ],
)
def test_model_level_rejections_explain_themselves(
    test_client: TestClient, payload: dict[str, Any], fragment: str
) -> None:
    response = test_client.post("/predict", json=payload)

    assert response.status_code == 422
    assert fragment in response.json()["detail"]


def test_validation_errors_point_at_the_bad_reading(test_client: TestClient) -> None:
    response = post_raw(test_client, f'{{"aggregate_w": [{_OK}, NaN]}}', "application/json")

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "aggregate_w", 20]
    assert error["type"] == "finite_number"


def test_limit_on_the_aggregate_is_inclusive(test_client: TestClient) -> None:
    response = test_client.post("/predict", json={"aggregate_w": [*mains(20), AGGREGATE_LIMIT_W]})
    assert response.status_code == 200, response.text


# --- settings overrides ----------------------------------------------------------------------


def test_max_length_override_replaces_the_bundle_setting(bundle: Bundle) -> None:
    client = TestClient(create_app(bundle, {"max_length": 20}), raise_server_exceptions=False)

    assert client.post("/predict", json={"aggregate_w": mains(20)}).status_code == 200
    too_long = client.post("/predict", json={"aggregate_w": mains(21)})
    assert too_long.status_code == 422
    assert f"between {WINDOW} and 20" in too_long.json()["detail"]
    assert client.get("/info").json()["details"]["max_length"] == 20


def test_min_length_override_replaces_the_bundle_setting(bundle: Bundle, reference: Any) -> None:
    client = TestClient(create_app(bundle, {"min_length": 3}), raise_server_exceptions=False)

    series = mains(3)
    response = client.post("/predict", json={"aggregate_w": series})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(predicted(response), reference(series), rtol=0, atol=0.0051)
    assert client.post("/predict", json={"aggregate_w": mains(2)}).status_code == 422


def test_unset_overrides_keep_the_bundle_settings(bundle: Bundle) -> None:
    """The CLI passes None for options not given; they must not erase the bundle's limits."""
    client = TestClient(create_app(bundle, {"min_length": None, "max_length": None}))

    details = client.get("/info").json()["details"]
    assert (details["min_length"], details["max_length"]) == (WINDOW, MAX_LENGTH)


def test_zero_min_length_still_refuses_an_empty_series(bundle: Bundle) -> None:
    client = TestClient(create_app(bundle, {"min_length": 0}), raise_server_exceptions=False)

    assert client.post("/predict", json={"aggregate_w": []}).status_code == 422
    assert client.post("/predict", json={"aggregate_w": [250.0]}).status_code == 200


# --- OpenAPI ---------------------------------------------------------------------------------


def _schema(openapi: dict[str, Any], ref_holder: dict[str, Any]) -> dict[str, Any]:
    """The schema itself when inline, else the component it refers to."""
    if "$ref" not in ref_holder:
        return ref_holder
    name = ref_holder["$ref"].rsplit("/", 1)[-1]
    return openapi["components"]["schemas"][name]  # type: ignore[no-any-return]


def test_openapi_documents_predict_with_examples(test_client: TestClient) -> None:
    response = test_client.get("/openapi.json")
    assert response.status_code == 200
    openapi = response.json()
    operation = openapi["paths"]["/predict"]["post"]

    request_schema = _schema(
        openapi, operation["requestBody"]["content"]["application/json"]["schema"]
    )
    response_schema = _schema(
        openapi, operation["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert request_schema["examples"], "request schema has no example"
    assert response_schema["examples"], "response schema has no example"
    assert set(request_schema["examples"][0]) <= set(request_schema["properties"])
    assert set(response_schema["required"]) <= set(response_schema["examples"][0])
    assert {"415", "422"} <= set(operation["responses"])


def test_the_documented_request_example_is_accepted(test_client: TestClient) -> None:
    openapi = test_client.get("/openapi.json").json()
    operation = openapi["paths"]["/predict"]["post"]
    example = _schema(openapi, operation["requestBody"]["content"]["application/json"]["schema"])[
        "examples"
    ][0]

    response = test_client.post("/predict", json=example)

    assert response.status_code == 200, response.text
    assert response.json()["length"] == len(example["aggregate_w"])


def test_docs_page_is_served(test_client: TestClient) -> None:
    response = test_client.get("/docs")
    assert response.status_code == 200
    assert "openapi.json" in response.text


# --- edges=valid: only full windows ----------------------------------------------------------


def test_valid_edges_return_only_full_window_readings(client: httpx.Client, reference: Any) -> None:
    series = mains(40, seed=3)
    start = datetime(2013, 6, 1, 7, 0)
    response = client.post(
        "/predict", json={"aggregate_w": series, "edges": "valid", "start": start.isoformat()}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["first_reading"] == HALF and body["edge_readings"] == 0
    assert body["length"] == 40
    values = predicted(response)
    assert values.shape == (40 - WINDOW + 1, len(APPLIANCES))
    # the same windows as the padded answer's middle: the same numbers
    np.testing.assert_allclose(values, reference(series)[HALF : 40 - HALF], atol=0.01)
    stamps = [datetime.fromisoformat(t) for t in body["timestamps"]]
    assert stamps[0] == start + HALF * timedelta(seconds=INTERVAL_S)
    assert len(stamps) == values.shape[0]


def test_one_window_gives_one_value_per_appliance(client: httpx.Client) -> None:
    response = client.post("/predict", json={"aggregate_w": mains(WINDOW), "edges": "valid"})

    assert response.status_code == 200, response.text
    assert {a: len(v) for a, v in response.json()["appliances"].items()} == dict.fromkeys(
        APPLIANCES, 1
    )


def test_valid_edges_need_a_full_window(bundle: Bundle) -> None:
    client = TestClient(create_app(bundle, {"min_length": 3}), raise_server_exceptions=False)
    short = client.post("/predict", json={"aggregate_w": mains(WINDOW - 1), "edges": "valid"})
    unknown = client.post("/predict", json={"aggregate_w": mains(WINDOW), "edges": "trim"})

    assert short.status_code == 422
    assert f"{WINDOW} readings, got {WINDOW - 1}" in short.json()["detail"]
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "edges"]
