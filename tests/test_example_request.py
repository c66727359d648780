"""One example request per task family (``ServingAdapter.example_request``): valid for the
family's own route, answered 200 by a real server, and the same in ``/info``, the OpenAPI schema
and the warm-up."""

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bundle_factory import make_nilm_bundle
from modelyard.core.bundle import Bundle
from modelyard.projects.nilm.serving import NilmServing
from modelyard.projects.tabular.serving import TabularServing
from modelyard.projects.vision.serving import VisionServing
from modelyard.serving.adapter import ServingAdapter, build_adapter
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server
from tabular_fixtures import build_avm_bundle
from vision_fixtures import IMAGE_SIZE, make_vision_bundle

#: Longer than the 100-reading OpenAPI example NILM had before the example was the model's.
NILM_WINDOW = 151
FAMILIES = ("nilm", "tabular", "vision")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    _, tabular = build_avm_bundle(tmp_path_factory, rows=300)
    return {
        "nilm": make_nilm_bundle(tmp_path_factory.mktemp("nilm") / "b", window=NILM_WINDOW),
        "tabular": tabular,
        "vision": make_vision_bundle(tmp_path_factory.mktemp("vision") / "b"),
    }


def adapter_of(bundle: Bundle) -> ServingAdapter:
    return build_adapter(bundle, OnnxModel(bundle.model_path, expected=bundle.manifest), None)


def examples_in(node: Any) -> Iterator[Any]:
    """Every value listed under an ``examples`` key of a JSON schema, however deep."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "examples" and isinstance(value, list):
                yield from value
            else:
                yield from examples_in(value)
    elif isinstance(node, list):
        for child in node:
            yield from examples_in(child)


def request_from_info(example: Any, family: str) -> dict[str, Any]:
    """``httpx.post`` arguments from ``/info``'s ``details.example``, as a client would build
    them: the JSON body, or each upload decoded from base64."""
    if family != "vision":
        return {"json": example}
    return {
        "files": {
            name: (f["filename"], base64.b64decode(f["base64"]), f["content_type"])
            for name, f in example.items()
        }
    }


def test_nilm_example_is_valid_for_the_route(bundles: dict[str, Bundle]) -> None:
    adapter = adapter_of(bundles["nilm"])
    assert isinstance(adapter, NilmServing)
    body = adapter.example_request().json
    request = adapter.request_adapter.validate_json(json.dumps(body))  # the route's own parsing
    series = adapter.check(request)
    assert series.size == NILM_WINDOW and series.max() > 2000 > series.min()  # a kettle block
    # the schema's example is the adapter's, and the route's model accepts it
    assert list(examples_in(adapter.Request.model_json_schema())) == [body]


def test_nilm_example_keeps_within_the_served_lengths(tmp_path: Path) -> None:
    bundle = make_nilm_bundle(tmp_path / "b", window=9)
    short = build_adapter(bundle, OnnxModel(bundle.model_path), {"min_length": 40})
    assert len(short.example_request().json["aggregate_w"]) == 40
    capped = build_adapter(bundle, OnnxModel(bundle.model_path), {"max_length": 5})
    assert len(capped.example_request().json["aggregate_w"]) == 5


def test_tabular_example_is_valid_for_the_route(bundles: dict[str, Bundle]) -> None:
    adapter = adapter_of(bundles["tabular"])
    assert isinstance(adapter, TabularServing)
    body = adapter.example_request().json
    (row,) = adapter.parse_rows(json.dumps(body).encode())  # the route's own parsing
    assert adapter.predict_rows([row])[0]["warnings"] == []
    assert body == bundles["tabular"].manifest.preprocessing["example_row"]


def test_tabular_bundle_without_an_example_row_builds_a_valid_one(
    bundles: dict[str, Bundle],
) -> None:
    adapter = adapter_of(bundles["tabular"])
    assert isinstance(adapter, TabularServing)
    from modelyard.projects.tabular.serving import schema_row

    row = schema_row(adapter.schema, adapter.known)
    (parsed,) = adapter.parse_rows(json.dumps(row).encode())
    assert adapter.predict_rows([parsed])[0]["warnings"] == []


def test_vision_example_is_an_image_of_the_model_size(bundles: dict[str, Bundle]) -> None:
    adapter = adapter_of(bundles["vision"])
    assert isinstance(adapter, VisionServing)
    (upload,) = adapter.example_request().files.values()
    assert upload.content_type == "image/png" and len(upload.data) < 2000
    batch, features = adapter.decode(upload.data)  # the route's own decoding
    assert batch.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert (features["width"], features["height"]) == (IMAGE_SIZE, IMAGE_SIZE)
    assert max(abs(v) for v in features["channel_means"]) < 0.5  # near the training mean


@pytest.mark.parametrize("family", FAMILIES)
def test_a_real_server_answers_its_own_example_from_info(
    family: str, bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    bundle = bundles[family]
    expected = adapter_of(bundle).example_request()
    with running_server(bundle.path, env={"MODELYARD_HOME": str(tmp_path)}) as url:
        example = httpx.get(f"{url}/info").json()["details"]["example"]
        answer = httpx.post(f"{url}/predict", timeout=30.0, **request_from_info(example, family))
        openapi = httpx.get(f"{url}/openapi.json").json()
    assert example == expected.to_json()
    assert answer.status_code == 200, answer.text
    if family != "vision":  # a binary upload has no JSON example in the schema
        request_body = openapi["paths"]["/predict"]["post"]["requestBody"]
        schemas = [request_body, openapi.get("components", {})]
        assert example in list(examples_in(schemas))
