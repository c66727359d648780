"""The tabular contract: written by training into the bundle, read back by the task and serving."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract_helpers import assert_refused_in_one_line
from modelyard.core.bundle import Bundle
from modelyard.projects.tabular.contract import DEFAULT_MAX_ROWS, TabularContract, TabularLimits
from modelyard.serving.app import create_app
from modelyard.serving.settings import ServerSettings
from tabular_fixtures import build_avm_bundle

pytestmark = pytest.mark.slow  # the bundle comes from a (quick) training run


#: The project's ``serving.max_rows`` at training (not the default, so its source shows).
MAX_ROWS = 7


@pytest.fixture(scope="module")
def avm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_avm_bundle(tmp_path_factory, 300, f"project.serving.max_rows={MAX_ROWS}")[1]


def with_manifest(bundle: Bundle, **changes: Any) -> Bundle:
    """``bundle`` as if its manifest had been written with ``changes``."""
    manifest = bundle.manifest.model_copy(update=changes)
    return bundle.model_copy(update={"manifest": manifest})


def old_layout(bundle: Bundle, serving: dict[str, Any] | None) -> Bundle:
    """``bundle`` as modelyard wrote it before the contract held its limits: no ``limits`` in
    ``preprocessing``, the training configuration's ``project.serving`` (``serving``) only."""
    pre = {k: v for k, v in bundle.manifest.preprocessing.items() if k != "limits"}
    project = {"name": "avm", **({} if serving is None else {"serving": serving})}
    return with_manifest(bundle, preprocessing=pre, config={"project": project})


def served(bundle: Bundle, overrides: dict[str, Any] | None = None) -> TestClient:
    return TestClient(create_app(bundle, overrides, settings=ServerSettings()))


def test_the_contract_round_trips_through_a_bundle(avm_bundle: Bundle) -> None:
    contract = TabularContract.parse(avm_bundle.manifest.preprocessing)

    assert avm_bundle.manifest.preprocessing["limits"] == {"max_rows": MAX_ROWS}
    assert contract.limits == TabularLimits(max_rows=MAX_ROWS)

    assert json.loads(json.dumps(contract.to_preprocessing())) == avm_bundle.manifest.preprocessing
    assert TabularContract.parse(contract.to_preprocessing()) == contract
    assert contract.example_row is not None


def test_an_old_layout_without_an_example_row_serves_one_built_from_the_schema(
    avm_bundle: Bundle,
) -> None:
    """Bundles from before ``example_row``: the contract says None, serving makes a row."""
    old = {k: v for k, v in avm_bundle.manifest.preprocessing.items() if k != "example_row"}
    assert TabularContract.parse(old).example_row is None

    client = served(with_manifest(avm_bundle, preprocessing=old))
    example = client.get("/info").json()["details"]["example"]
    assert example and example != avm_bundle.manifest.preprocessing["example_row"]
    assert client.post("/predict", json=example).status_code == 200


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda pre: pre.pop("features"), "has no 'features'"),
        (lambda pre: pre.update(target=3), "target must be an object"),
        (lambda pre: pre["schema"].pop("target"), "schema.target: Field required"),
        (lambda pre: pre.update(limits={"max_rows": 0}), "limits.max_rows: Input should be"),
    ],
)
def test_a_broken_contract_is_one_line_that_says_how_to_re_export(
    avm_bundle: Bundle, edit: Any, fragment: str
) -> None:
    pre = json.loads(json.dumps(avm_bundle.manifest.preprocessing))
    edit(pre)
    assert_refused_in_one_line(TabularContract.parse, pre, fragment)


# --- request limits ----------------------------------------------------------------------------


def test_an_old_layout_takes_its_limit_from_the_saved_configuration(avm_bundle: Bundle) -> None:
    old = old_layout(avm_bundle, {"max_rows": MAX_ROWS})

    assert TabularContract.from_manifest(old.manifest) == TabularContract.from_manifest(
        avm_bundle.manifest
    )
    infos = [served(b).get("/info").json()["details"] for b in (avm_bundle, old)]
    assert infos[0] == infos[1]
    assert infos[0]["max_rows"] == MAX_ROWS


def test_an_old_layout_without_serving_settings_gets_the_default(avm_bundle: Bundle) -> None:
    client = served(old_layout(avm_bundle, None))

    assert client.get("/info").json()["details"]["max_rows"] == DEFAULT_MAX_ROWS


def test_serving_never_reads_the_training_configuration(avm_bundle: Bundle) -> None:
    """A new bundle's config (provenance) disagreeing with its contract changes nothing."""
    misleading = with_manifest(avm_bundle, config={"project": {"serving": {"max_rows": 2}}})

    assert served(misleading).get("/info").json()["details"]["max_rows"] == MAX_ROWS


def test_serve_overrides_replace_the_contracts_limit(avm_bundle: Bundle) -> None:
    client = served(avm_bundle, {"max_rows": 3})

    assert client.get("/info").json()["details"]["max_rows"] == 3
    assert client.post("/predict", json=[client_example(client)] * 4).status_code == 422


def client_example(client: TestClient) -> dict[str, Any]:
    example: dict[str, Any] = client.get("/info").json()["details"]["example"]
    return example


@pytest.mark.parametrize("layout", ["new", "old"])
def test_more_rows_than_the_limit_are_refused_in_both_layouts(
    avm_bundle: Bundle, layout: str
) -> None:
    bundle = avm_bundle if layout == "new" else old_layout(avm_bundle, {"max_rows": MAX_ROWS})
    client = served(bundle)
    row = client_example(client)

    assert client.post("/predict", json=[row] * MAX_ROWS).status_code == 200
    refused = client.post("/predict", json=[row] * (MAX_ROWS + 1))
    assert refused.status_code == 422
    assert f"send between 1 and {MAX_ROWS} rows, got {MAX_ROWS + 1}" in refused.text
