"""The NILM contract: written by training into the bundle, read back by everything after it."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bundle_factory import (
    AGGREGATE_LIMIT_W,
    APPLIANCES,
    INTERVAL_S,
    MAX_LENGTH,
    WINDOW,
    edit_sealed_manifest,
    make_nilm_bundle,
    nilm_contract,
    nilm_normalisation,
)
from cli_helpers import assert_user_error
from contract_helpers import assert_refused_in_one_line
from modelyard.cli import app as cli_app
from modelyard.core.bundle import Bundle, load_bundle
from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError
from modelyard.loadtest.options import LoadOptions
from modelyard.loadtest.payloads import nilm_request_payloads
from modelyard.projects.nilm.contract import NilmContract
from modelyard.projects.nilm.evaluation import evaluate_houses
from modelyard.projects.nilm.task import NilmTask
from modelyard.serving.app import create_app
from modelyard.serving.settings import ServerSettings
from nilm_fixtures import make_house

#: Bundles written before the contract held limits and lengths: these keys only, and the
#: limits and serving bounds in the training configuration the manifest keeps.
LEGACY_KEYS = ("window", "interval_s", "appliances", "normalisation", "on_threshold_w", "edges")


def to_legacy_layout(raw: dict[str, Any]) -> None:
    """Rewrite a manifest as modelyard wrote it before this contract (format 1 and 2)."""
    pre = raw["preprocessing"]
    limits = {"aggregate": pre["max_aggregate_w"], **pre["limit_w"]}
    raw["preprocessing"] = {key: pre[key] for key in LEGACY_KEYS}
    raw["config"] = {
        "project": {
            "data": {"limits_w": limits, "window": pre["window"]},
            "serving": {"min_length": pre["min_length"], "max_length": pre["max_length"]},
        }
    }


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(tmp_path_factory.mktemp("contract") / "bundle")


@pytest.fixture(scope="module")
def legacy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    path = tmp_path_factory.mktemp("legacy") / "bundle"
    make_nilm_bundle(path)
    edit_sealed_manifest(path, to_legacy_layout)
    return load_bundle(path)


def info_details(bundle: Bundle, **overrides: int) -> dict[str, Any]:
    client = TestClient(create_app(bundle, overrides=overrides or None, settings=ServerSettings()))
    details: dict[str, Any] = client.get("/info").json()["details"]
    return details


def test_the_contract_round_trips_through_a_bundle(bundle: Bundle) -> None:
    written = nilm_contract(WINDOW, APPLIANCES)

    assert NilmContract.from_manifest(bundle.manifest) == written
    assert json.loads(json.dumps(written.to_preprocessing())) == bundle.manifest.preprocessing


def test_an_old_layout_manifest_parses_to_the_same_contract(
    bundle: Bundle, legacy_bundle: Bundle
) -> None:
    assert set(legacy_bundle.manifest.preprocessing) == set(LEGACY_KEYS)
    assert NilmContract.from_manifest(legacy_bundle.manifest) == NilmContract.from_manifest(
        bundle.manifest
    )


def test_an_old_layout_without_limits_or_bounds_gets_the_old_defaults() -> None:
    legacy = {
        "window": 9,
        "interval_s": 60,
        "appliances": ["kettle"],
        "normalisation": nilm_normalisation(["kettle"]).to_json(),
        "on_threshold_w": {"kettle": 500.0},
    }
    contract = NilmContract.parse(legacy, config={})

    assert (contract.min_length, contract.max_length) == (9, 20160)
    assert math.isinf(contract.max_aggregate_w) and math.isinf(
        contract.appliances["kettle"].limit_w
    )


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda pre: pre.pop("window"), "has no 'window': not a NILM bundle of this version"),
        (lambda pre: pre.update(window=10), "window: Value error, window must be an odd number"),
        (lambda pre: pre["limit_w"].pop("kettle"), "lists ['kettle'] without an on_threshold_w"),
        (lambda pre: pre.update(min_length=0), "min_length: Input should be greater than"),
    ],
)
def test_a_broken_contract_is_one_line_that_says_how_to_re_export(
    bundle: Bundle, edit: Any, fragment: str
) -> None:
    pre = json.loads(json.dumps(bundle.manifest.preprocessing))
    edit(pre)
    assert_refused_in_one_line(NilmContract.parse, pre, fragment)


@pytest.mark.parametrize("which", ["bundle", "legacy_bundle"])
def test_serving_shows_the_contract_whatever_the_layout(
    which: str, request: pytest.FixtureRequest
) -> None:
    details = info_details(request.getfixturevalue(which))

    assert {k: v for k, v in details.items() if k != "example"} == {
        "window": WINDOW,
        "interval_s": INTERVAL_S,
        "appliances": list(APPLIANCES),
        "min_length": WINDOW,
        "max_length": MAX_LENGTH,
        "max_aggregate_w": AGGREGATE_LIMIT_W,
    }


def test_serving_never_reads_the_training_configuration(tmp_path: Path) -> None:
    """A new bundle's config (provenance) disagreeing with its contract changes nothing."""
    make_nilm_bundle(tmp_path / "bundle")

    def misleading(raw: dict[str, Any]) -> None:
        raw["config"] = {
            "project": {
                "data": {"limits_w": {"aggregate": 5.0}, "window": 3},
                "serving": {"min_length": 3, "max_length": 4},
            }
        }

    edit_sealed_manifest(tmp_path / "bundle", misleading)
    details = info_details(load_bundle(tmp_path / "bundle"))

    assert (details["min_length"], details["max_length"]) == (WINDOW, MAX_LENGTH)
    assert details["max_aggregate_w"] == AGGREGATE_LIMIT_W


def test_serve_options_still_override_the_contracts_lengths(bundle: Bundle) -> None:
    details = info_details(bundle, max_length=100)

    assert (details["min_length"], details["max_length"]) == (WINDOW, 100)


def test_the_load_test_sends_series_within_the_served_contract(bundle: Bundle) -> None:
    details = info_details(bundle)
    payloads = nilm_request_payloads(details, LoadOptions(nilm_length="100000"), None)  # type: ignore[arg-type]

    bodies = [json.loads(p.body) for p in payloads]
    assert {len(b["aggregate_w"]) for b in bodies} == {MAX_LENGTH}
    assert {b["interval_s"] for b in bodies} == {INTERVAL_S}
    assert max(max(b["aggregate_w"]) for b in bodies) <= AGGREGATE_LIMIT_W


def test_evaluation_reads_window_appliances_and_thresholds_from_the_contract(
    tmp_path: Path,
) -> None:
    house = make_house("house_a", 200, n_targets=2, seed=1)
    legacy = {
        "window": 5,
        "interval_s": 60,
        "appliances": ["app1"],  # the second column only: the contract picks and orders them
        "normalisation": nilm_normalisation(["app1"]).to_json(),
        "on_threshold_w": {"app1": 250.0},
    }
    contract = NilmContract.parse(legacy)

    metrics = evaluate_houses(
        [house], lambda x: np.zeros((x.shape[0], 1), np.float32), contract, tmp_path, plot_days=0
    )

    assert (metrics["window"], metrics["interval_s"]) == (5, 60)
    assert metrics["houses"]["house_a"]["windows"] == 196
    assert list(metrics["overall"]) == ["app1"]
    assert metrics["overall"]["app1"]["model"]["on_threshold_w"] == 250.0


def test_training_writes_the_configured_table_into_the_contract(tmp_path: Path) -> None:
    cfg = load_config([f"paths.workdir={tmp_path}", "project.appliances.kettle.on_threshold_w=400"])
    contract = NilmTask(cfg).contract(nilm_normalisation(["k", "m", "d", "w"]))

    assert contract.names == ["kettle", "microwave", "dishwasher", "washing_machine"]
    assert contract.appliances["kettle"].on_threshold_w == 400.0
    assert contract.appliances["microwave"].limit_w == 3000.0
    assert (contract.window, contract.min_length, contract.max_aggregate_w) == (99, 99, 23000.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "project.appliances.kettle.on_threshold_w=hot",
            "project.appliances.kettle.on_threshold_w: Input should be a valid number",
        ),
        (
            "project.appliances.kettle.limit_w=-1",
            "project.appliances.kettle.limit_w: Input should be greater than 0",
        ),
        ("+project.appliances.kettle.colour=red", "project.appliances.kettle.colour: Extra"),
        ("project.appliances.kettle=5", "project.appliances.kettle: Input should be a valid"),
        ("project.appliances=null", "project.appliances must map each appliance"),
    ],
)
def test_a_bad_appliance_entry_is_a_config_error_naming_it(
    tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        NilmTask(load_config([f"paths.workdir={tmp_path}", override]))
    assert "\n" not in str(caught.value)


def test_the_cli_reports_a_bad_appliance_entry_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path))
    args = ["train", "project.appliances.kettle.on_threshold_w=hot"]
    outcome = CliRunner().invoke(cli_app, args)
    result = subprocess.CompletedProcess(args, outcome.exit_code, outcome.stdout, outcome.stderr)
    assert_user_error(result, "project.appliances.kettle.on_threshold_w")
