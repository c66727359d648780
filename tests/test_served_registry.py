"""``/info``'s ``registry`` block: a real server of ``models:/NAME@ALIAS`` on a real embedded MLflow
registry says which version it serves and the gates its promotion passed, with their numbers.

The promotion record is written as ``modelyard promote`` writes it (:class:`Promotion`); the
promotion itself (evaluation on a project's data, the latency gate) is covered by
``test_registry.py``.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bundle_factory import make_nilm_bundle
from cli_helpers import TIMEOUT_S, assert_user_error, modelyard
from modelyard.core.bundle import Bundle
from modelyard.registry.promotion_record import PROMOTION_TAG, Promotion, registry_block
from modelyard.registry.store import ModelRegistry, RegisteredVersion
from modelyard.serving.registry_info import GateOutcome
from modelyard.serving.server_process import free_port, running_server

NAME = "meter"
GATES = [
    GateOutcome(
        name="metrics",
        passed=True,
        summary="not worse on any of 2 metric(s)",
        values={"kettle.mae_w": {"holder": 12.5, "candidate": 11.0, "passed": True}},
    ),
    GateOutcome(
        name="latency",
        passed=True,
        summary="p95 3.2 ms over 20 requests, within the 50 ms limit",
        values={"p50_ms": 2.1, "p95_ms": 3.2, "requests": 20, "max_p95_ms": 50.0},
    ),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(tmp_path_factory.mktemp("registered") / "bundle")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bundle: Bundle) -> Iterator[Path]:
    """An embedded registry holding ``bundle`` as version 1 of ``meter``, promoted to
    ``production`` through the gates, and ``staging`` set by hand (no promotion record)."""
    home = tmp_path_factory.mktemp("home")
    store = ModelRegistry(f"sqlite:///{home / 'mlflow.db'}", home / "cache", home / "artifacts")
    version = store.register(bundle.path, name=NAME).version
    store.set_alias(NAME, "production", version)
    store.set_alias(NAME, "staging", version)
    promotion = Promotion("20261205-120000", "production", None, True, False, GATES)
    store.tag_version(NAME, version, PROMOTION_TAG.format(alias="production"), promotion.record())
    yield home


def _info(home: Path, target: str) -> dict[str, object]:
    env = {"MODELYARD_HOME": str(home), "MLFLOW_TRACKING_URI": "", "MLFLOW_REGISTRY_URI": ""}
    extra = ["--registry-uri", f"sqlite:///{home / 'mlflow.db'}"]
    with running_server(target, extra_args=extra, env=env) as url:
        info: dict[str, object] = httpx.get(f"{url}/info", timeout=10).json()
    return info


def test_a_server_of_an_alias_shows_the_version_and_the_gates_it_passed(
    registry: Path, bundle: Bundle
) -> None:
    info = _info(registry, f"models:/{NAME}@production")
    assert info["version"] == bundle.manifest.version
    assert info["registry"] == {
        "name": NAME,
        "version": "1",
        "alias": "production",
        "bundle_version": bundle.manifest.version,
        "promoted_at": "20261205-120000",
        "forced": False,
        "gates": [gate.model_dump(mode="json") for gate in GATES],
    }


def test_an_alias_set_without_promotion_shows_no_gates(registry: Path) -> None:
    staged = _info(registry, f"models:/{NAME}@staging")["registry"]
    assert isinstance(staged, dict)
    assert (staged["alias"], staged["promoted_at"], staged["gates"]) == ("staging", None, [])


def test_a_bundle_directory_has_no_registry_block(registry: Path, bundle: Bundle) -> None:
    assert _info(registry, str(bundle.path))["registry"] is None


def test_records_of_older_promotions_give_the_verdicts_without_numbers() -> None:
    older = (
        '{"at": "20261101-000000", "forced": true, "gates": {"metrics": false, "latency": true}}'
    )
    version = RegisteredVersion(
        NAME, "4", "source", {"promotion.production": older, "bundle_version": "b"}, []
    )
    block = registry_block(version, "production")
    assert block.forced is True and block.promoted_at == "20261101-000000"
    assert [(g.name, g.passed, g.summary, g.values) for g in block.gates] == [
        ("metrics", False, None, {}),
        ("latency", True, None, {}),
    ]
    garbage = RegisteredVersion(NAME, "4", "source", {"promotion.production": "{oops"}, [])
    assert registry_block(garbage, "production").gates == []
    # served by version number (models:/NAME/4): no alias, so no promotion to show
    numbered = registry_block(version, None)
    assert (numbered.version, numbered.alias, numbered.gates) == ("4", None, [])


def serve_without(module: str, registry_uri: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``modelyard serve models:/...`` where ``import MODULE`` fails: ``mlflow`` as in
    ``pip install modelyard`` (the plain serve image), ``alembic`` as with MLflow's client alone
    (the ``registry`` extra: mlflow-skinny)."""
    run_cli = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv[0] = 'modelyard'; "
        "from modelyard.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", run_cli, "serve", f"models:/{NAME}@production"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env={
            **os.environ,
            "MODELYARD_HOME": str(home),
            "MODELYARD_REGISTRY_URI": registry_uri,  # as the container sets it
            "MODELYARD_PORT": str(free_port()),
            "COLUMNS": "200",
        },
    )


def test_serving_a_registry_reference_without_mlflow_names_the_registry_extra(
    tmp_path: Path,
) -> None:
    result = serve_without("mlflow", "http://127.0.0.1:1", tmp_path)
    assert_user_error(result, "the model registry at http://127.0.0.1:1 needs MLflow's client")
    assert "pip install 'modelyard[registry]'" in result.stderr


def test_an_embedded_store_with_only_mlflows_client_says_what_it_needs(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = serve_without("alembic", uri, tmp_path)
    assert_user_error(result, f"{uri} is an embedded MLflow store, which needs all of MLflow")
    assert "(alembic" in result.stderr and "MLflow server's URL" in result.stderr


def test_an_unsupported_registry_uri_is_one_line(tmp_path: Path) -> None:
    result = modelyard(
        "serve", f"models:/{NAME}@production", "--registry-uri", "foo://bar", workdir=tmp_path
    )
    assert_user_error(result, "MLflow cannot open foo://bar: ")
