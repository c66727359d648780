"""The tabular contract: written by training into the bundle, read back by the task and serving."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract_helpers import assert_refused_in_one_line
from modelyard.core.bundle import Bundle
from modelyard.projects.tabular.contract import TabularContract
from modelyard.serving.app import create_app
from modelyard.serving.settings import ServerSettings
from tabular_fixtures import build_avm_bundle

pytestmark = pytest.mark.slow  # the bundle comes from a (quick) training run


@pytest.fixture(scope="module")
def avm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_avm_bundle(tmp_path_factory, rows=300)[1]


def test_the_contract_round_trips_through_a_bundle(avm_bundle: Bundle) -> None:
    contract = TabularContract.parse(avm_bundle.manifest.preprocessing)

    assert json.loads(json.dumps(contract.to_preprocessing())) == avm_bundle.manifest.preprocessing
    assert TabularContract.parse(contract.to_preprocessing()) == contract
    assert contract.example_row is not None


def test_an_old_layout_without_an_example_row_serves_one_built_from_the_schema(
    avm_bundle: Bundle,
) -> None:
    """Bundles from before ``example_row``: the contract says None, serving makes a row."""
    old = {k: v for k, v in avm_bundle.manifest.preprocessing.items() if k != "example_row"}
    assert TabularContract.parse(old).example_row is None

    manifest = avm_bundle.manifest.model_copy(update={"preprocessing": old})
    bundle = avm_bundle.model_copy(update={"manifest": manifest})
    client = TestClient(create_app(bundle, settings=ServerSettings()))
    example = client.get("/info").json()["details"]["example"]
    assert example and example != avm_bundle.manifest.preprocessing["example_row"]
    assert client.post("/predict", json=example).status_code == 200


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda pre: pre.pop("features"), "has no 'features'"),
        (lambda pre: pre.update(target=3), "target must be an object"),
        (lambda pre: pre["schema"].pop("target"), "schema.target: Field required"),
    ],
)
def test_a_broken_contract_is_one_line_that_says_how_to_re_export(
    avm_bundle: Bundle, edit: Any, fragment: str
) -> None:
    pre = json.loads(json.dumps(avm_bundle.manifest.preprocessing))
    edit(pre)
    assert_refused_in_one_line(TabularContract.parse, pre, fragment)
