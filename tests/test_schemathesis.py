"""Schemathesis against every endpoint of every family, on real servers (issue 14).

One ``modelyard serve`` per family (NILM, tabular/avm, vision) on 127.0.0.1, its own OpenAPI
document as the contract, every check schemathesis has, positive and negative data, a fixed seed
and a bounded number of examples per operation. Expected: no server error, no response that
disagrees with the schema, every refusal declared. Known deviations are listed in DEVIATIONS
with their reason.

The run goes through schemathesis' engine (what its CLI runs: examples, coverage and fuzzing
phases) rather than its pytest plugin, whose lazy ``from_fixture`` tests fail under pytest 9
(schemathesis 4.32: ``'Function' object has no attribute '_nodeid'``).
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, from_schema
from schemathesis.engine.events import FatalError, NonFatalError, ScenarioFinished

from bundle_factory import make_nilm_bundle
from modelyard.serving.server_process import running_server
from tabular_fixtures import build_avm_bundle
from vision_fixtures import make_vision_bundle

SEED = 14
MAX_EXAMPLES = 50
CONFIG = {
    "seed": SEED,
    "generation": {
        "mode": "all",  # valid and invalid data
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    "phases": {"stateful": {"enabled": False}},  # no links between operations to follow
    "checks": {"enabled": True},
    "request-timeout": 30,
    "cache": {"enabled": False},  # nothing written into the checkout
}


#: (family, operation, check) that fail for a known reason, with the reason.
DEVIATIONS: dict[tuple[str, str, str], str] = {
    ("vision", "POST /predict", "positive_data_acceptance"): (
        "a schema can say 'a binary file part named file' but not 'a decodable JPEG or PNG': "
        "the bytes schemathesis makes up (an empty file, say) are schema-valid and rightly "
        "answered 422 'invalid image' (the refusal is declared in the responses)"
    ),
}


def serve(path: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"MODELYARD_HOME": str(tmp_path_factory.mktemp("home"))}
    with running_server(path, env=env) as url:
        yield url


@pytest.fixture(scope="module")
def nilm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = make_nilm_bundle(tmp_path_factory.mktemp("nilm") / "bundle")
    yield from serve(bundle.path, tmp_path_factory)


@pytest.fixture(scope="module")
def tabular_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = build_avm_bundle(tmp_path_factory, rows=300)[1]
    yield from serve(bundle.path, tmp_path_factory)


@pytest.fixture(scope="module")
def vision_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = make_vision_bundle(tmp_path_factory.mktemp("vision") / "bundle")
    yield from serve(bundle.path, tmp_path_factory)


@dataclass
class Findings:
    """What one schemathesis run found: requests sent, failed checks, errors of the run itself."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: set[tuple[str, str, str]] = field(default_factory=set)  # operation, check, title
    errors: list[str] = field(default_factory=list)
    samples: dict[tuple[str, str, str], str] = field(default_factory=dict)
    operations: set[str] = field(default_factory=set)


def probe(url: str) -> Findings:
    """Run every phase of schemathesis against the server at ``url`` and collect its findings."""
    schema = schemathesis.openapi.from_url(
        f"{url}/openapi.json", config=SchemathesisConfig.from_dict(CONFIG)
    )
    found = Findings()
    for event in from_schema(schema).execute():
        if isinstance(event, ScenarioFinished):
            found.operations.add(event.recorder.label)
            for interaction in event.recorder.interactions.values():
                found.requests += 1
                if interaction.response is not None:
                    found.statuses[interaction.response.status_code] += 1
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        key = (event.recorder.label, check.name, check.failure_info.failure.title)
                        found.failures.add(key)
                        found.samples.setdefault(key, check.failure_info.code_sample)
        elif isinstance(event, NonFatalError | FatalError):
            found.errors.append(repr(getattr(event, "value", None) or event.exception))
    return found


def unexpected(family: str, found: Findings) -> list[str]:
    """Failures not in DEVIATIONS, each with a command that reproduces it."""
    return [
        f"{operation}: {check}: {title}\n{found.samples[(operation, check, title)]}"
        for operation, check, title in sorted(found.failures)
        if (family, operation, check) not in DEVIATIONS
    ]


def assert_conforms(family: str, url: str) -> None:
    found = probe(url)
    print(f"{found.requests} requests, statuses {dict(sorted(found.statuses.items()))}")
    assert not found.errors, found.errors
    assert found.requests > 50, "schemathesis sent too few requests to mean anything"
    # the routes of every family (the servers keep the default prediction log: /feedback is on)
    assert {"POST /predict", "POST /feedback", "GET /info"} <= found.operations, found.operations
    assert not [s for s in found.statuses if s >= 500], found.statuses
    problems = unexpected(family, found)
    assert not problems, "\n\n".join(problems)


def test_nilm_api_conforms_to_its_schema(nilm_url: str) -> None:
    assert_conforms("nilm", nilm_url)


def test_tabular_api_conforms_to_its_schema(tabular_url: str) -> None:
    assert_conforms("tabular", tabular_url)


def test_vision_api_conforms_to_its_schema(vision_url: str) -> None:
    assert_conforms("vision", vision_url)
