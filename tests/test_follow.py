"""``serve models:/NAME@ALIAS --follow``: a promotion is served without a restart.

A real server (two uvicorn workers) follows an alias in a real embedded MLflow registry while
threads keep sending requests; the alias is moved to a second version, then to versions that
must be refused. Counted: no failed request, no answer from a half-loaded or mixed model, the
new version in ``/info``, ``/metrics`` and every prediction-log row of the requests it answered.
"""

import re
import shutil
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bundle_factory import edit_sealed_manifest, make_nilm_bundle
from cli_helpers import assert_user_error, modelyard
from modelyard.core.bundle import Bundle, load_bundle
from modelyard.registry.alias_watch import AliasWatch
from modelyard.registry.references import parse_reference
from modelyard.registry.store import ModelRegistry
from modelyard.serving.adapter import bundle_example
from modelyard.serving.model_swap import FollowState
from modelyard.serving.server_process import running_server
from modelyard.serving.service import Service
from modelyard.serving.settings import ServerSettings

NAME = "meter"
FIRST, SECOND = "20261201-000001", "20261201-000002"
CLIENTS = 4
DEADLINE_S = 60.0


def _bundle(target: Path, version: str, seed: int, window: int = 15) -> Bundle:
    make_nilm_bundle(target, window=window, seed=seed)
    edit_sealed_manifest(target, lambda raw: raw.update(version=version))
    return load_bundle(target)


@dataclass
class Registry:
    uri: str
    store: ModelRegistry
    bundles: dict[str, Bundle] = field(default_factory=dict)

    def add(self, bundle: Bundle) -> str:
        registered = self.store.register(bundle.path, name=NAME).version
        self.bundles[registered] = bundle
        return registered

    def promote(self, version: str) -> None:
        self.store.set_alias(NAME, "champion", version)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, Bundle]:
    """Two versions of a small NILM model: different weights, the same contract."""
    made = tmp_path_factory.mktemp("versions")
    return _bundle(made / "v1", FIRST, seed=0), _bundle(made / "v2", SECOND, seed=1)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, versions: tuple[Bundle, Bundle]) -> Path:
    """A registry database holding ``versions`` as 1 and 2, registered once (MLflow's set-up
    takes seconds); each test works on a copy."""
    made = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{made / 'mlflow.db'}"
    store = ModelRegistry(uri, made / "cache", made / "artifacts")
    for bundle in versions:
        store.register(bundle.path, name=NAME)
    return made / "mlflow.db"


@pytest.fixture
def registry(tmp_path: Path, template: Path, versions: tuple[Bundle, Bundle]) -> Registry:
    return _registry(tmp_path, template, versions)


def _registry(tmp_path: Path, template: Path, versions: tuple[Bundle, Bundle]) -> Registry:
    """A copy of the template registry, the alias ``champion`` on version 1."""
    shutil.copy(template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    found = Registry(uri, ModelRegistry(uri, tmp_path / "cache", tmp_path / "artifacts"))
    found.bundles.update({"1": versions[0], "2": versions[1]})
    found.promote("1")
    return found


@dataclass
class Answer:
    request_id: str
    status: int
    version: str | None


class Load:
    """Clients sending requests without a pause, each over its own kept-alive connection (so
    each stays with one worker and sees that worker's versions in order)."""

    def __init__(self, url: str, request: dict[str, Any]) -> None:
        self.url = url
        self.request = request
        self.answers: list[list[Answer]] = [[] for _ in range(CLIENTS)]
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            sent = 0
            while not self.stop.is_set():
                request_id = f"c{index}-{sent}"
                sent += 1
                try:
                    response = client.post(
                        "/predict", headers={"X-Request-ID": request_id}, **self.request
                    )
                except httpx.HTTPError:
                    self.answers[index].append(Answer(request_id, 0, None))
                    continue
                body = response.json() if response.status_code == 200 else {}
                self.answers[index].append(
                    Answer(request_id, response.status_code, body.get("version"))
                )

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def all(self) -> list[Answer]:
        return [answer for answers in self.answers for answer in answers]

    def settled_on(self, version: str, last: int = 5) -> bool:
        """Every client's latest ``last`` answers came from ``version``."""
        return all(
            len(a) >= last and all(x.version == version for x in a[-last:]) for a in self.answers
        )


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def _wait_for(check: Any, what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _swaps(url: str, result: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return _metric(text, "modelyard_model_swaps_total", result=result) or 0.0


def _server(registry: Registry, tmp_path: Path, workers: int = 2) -> Any:
    return running_server(
        f"models:/{NAME}@champion",
        extra_args=[
            "--follow",
            "--follow-interval",
            "0.2",
            "--registry-uri",
            registry.uri,
            "--workers",
            str(workers),
            "--threads",
            "1",
            "--prediction-log",
            f"sqlite:///{tmp_path / 'predictions.db'}",
            "--log-flush-interval",
            "0.05",
        ],
        env={"MODELYARD_HOME": str(tmp_path / "home")},
    )


def _logged_versions(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "predictions.db") as db:
        return dict(db.execute("SELECT request_id, version FROM predictions").fetchall())


def test_a_promotion_under_load_is_served_without_a_failed_or_mixed_answer(
    registry: Registry, tmp_path: Path
) -> None:
    request = bundle_example(registry.bundles["1"]).httpx_arguments()
    with _server(registry, tmp_path) as url, Load(url, request) as load:
        _wait_for(lambda: load.settled_on(FIRST), "every client answered by the first version")
        registry.promote("2")
        _wait_for(lambda: _swaps(url, "swapped") == 2, "both workers swapped")
        _wait_for(lambda: load.settled_on(SECOND), "every client answered by the second version")
        load.__exit__()

        infos = [httpx.get(f"{url}/info", timeout=10).json() for _ in range(6)]
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        ready = httpx.get(f"{url}/ready", timeout=10).json()

    answers = load.all()
    assert len(answers) > 100
    assert [a for a in answers if a.status != 200] == []
    assert {a.version for a in answers} == {FIRST, SECOND}
    for client in load.answers:  # a worker never goes back, and never mixes
        versions = [a.version for a in client]
        first_new = versions.index(SECOND)
        assert set(versions[first_new:]) == {SECOND}, versions
    assert {info["version"] for info in infos} == {SECOND}
    assert {info["follow"]["registry_version"] for info in infos} == {"2"}
    assert all(info["follow"]["error"] is None for info in infos)
    assert ready["version"] == SECOND
    sha = registry.bundles["2"].manifest.sha256
    assert _metric(metrics, "modelyard_model_info", version=SECOND, sha256=sha) == 1
    assert _metric(metrics, "modelyard_model_info", version=FIRST) == 0
    logged = _logged_versions(tmp_path)  # the server stopped: every row is written
    assert {a.request_id: a.version for a in answers} == {
        a.request_id: logged[a.request_id] for a in answers
    }


def test_a_version_that_cannot_be_served_is_refused_and_the_served_one_stays(
    registry: Registry, tmp_path: Path
) -> None:
    changed = registry.add(_bundle(tmp_path / "v3", "20261201-000003", seed=2, window=17))
    broken = registry.add(_bundle(tmp_path / "v4", "20261201-000004", seed=3))
    source = registry.store.version(parse_reference(f"models:/{NAME}/{broken}")).source
    model_file = Path(source.removeprefix("file://")) / "model.onnx"
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    request = bundle_example(registry.bundles["1"]).httpx_arguments()

    with _server(registry, tmp_path, workers=1) as url:
        registry.promote(changed)
        _wait_for(lambda: _swaps(url, "refused") == 1, "the changed contract refused")
        refused = httpx.get(f"{url}/info", timeout=10).json()
        registry.promote(broken)
        _wait_for(
            lambda: "sha256" in str(httpx.get(f"{url}/info").json()["follow"]["error"]),
            "the tampered version reported",
        )
        tampered = httpx.get(f"{url}/info", timeout=10).json()
        answer = httpx.post(f"{url}/predict", **request)
        registry.promote("2")
        _wait_for(lambda: _swaps(url, "swapped") == 1, "the good version swapped in")
        recovered = httpx.get(f"{url}/info", timeout=10).json()

    assert refused["version"] == FIRST
    assert "task facts changed: min_length, window;" in refused["follow"]["error"]
    assert f"registry version {changed} refused" in refused["follow"]["error"]
    assert tampered["version"] == FIRST
    assert answer.status_code == 200
    assert answer.json()["version"] == FIRST
    assert recovered["version"] == SECOND
    assert recovered["follow"]["error"] is None


def test_an_unreachable_registry_is_retried_and_the_alias_still_followed(
    tmp_path: Path,
    template: Path,
    versions: tuple[Bundle, Bundle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")  # the file opened per look
    registry = _registry(tmp_path, template, versions)
    database = tmp_path / "mlflow.db"
    watched = ModelRegistry(registry.uri, tmp_path / "watch-cache")
    state_file = tmp_path / "state.json"
    watch = AliasWatch(watched, parse_reference(f"models:/{NAME}@champion"), state_file)
    watch.start_version()

    database.rename(tmp_path / "away.db")
    try:
        watch.look()
        unreachable = FollowState.read(state_file)
    finally:
        (tmp_path / "away.db").replace(database)
    registry.promote("2")
    watch.look()
    back = FollowState.read(state_file)

    assert unreachable.version == "1"
    assert unreachable.error is not None and "retrying" in unreachable.error
    assert back.version == "2" and back.error is None
    assert back.bundle is not None and load_bundle(Path(back.bundle)).manifest.version == SECOND


def test_follow_needs_a_registry_alias(tmp_path: Path) -> None:
    bundle = make_nilm_bundle(tmp_path / "bundle")
    result = modelyard("serve", str(bundle.path), "--follow", workdir=tmp_path)
    assert_user_error(result, "--follow needs a registry alias")


def test_a_replaced_model_is_closed_after_its_last_request_and_its_session_freed(
    versions: tuple[Bundle, Bundle],
) -> None:
    service = Service(versions[0], None, ServerSettings(warmup_requests=1))
    service.start()
    try:
        old = service.switch.swap(service.load(versions[1].path))
        session = weakref.ref(old.onnx.session)
        old.in_flight.count = 1  # a request the old model took is still being answered
        retiring = threading.Thread(target=service.switch.retire, args=(old, 30.0))
        retiring.start()
        time.sleep(0.3)
        waited = retiring.is_alive() and session() is not None
        old.in_flight.count = 0
        retiring.join(timeout=10)
        del old

        assert waited
        assert session() is None  # FastAPI's endpoint cache keeps the adapter, not the session
        assert service.served.version == SECOND
    finally:
        service.stop()


def test_a_worker_started_after_a_promotion_is_ready_with_the_followed_version(
    versions: tuple[Bundle, Bundle], tmp_path: Path
) -> None:
    # what uvicorn does when it replaces a dead worker: the settings still name the first bundle
    state = tmp_path / "follow-state.json"
    FollowState(
        reference=f"models:/{NAME}@champion",
        version="2",
        bundle=str(versions[1].path),
        checked_at=datetime.now(UTC),
    ).write(state)
    settings = ServerSettings(warmup_requests=1, follow_file=str(state), follow_interval_s=60)
    service = Service(versions[0], None, settings)
    service.start()
    try:
        assert service.ready
        assert service.served.version == SECOND
        assert service.follower is not None and service.follower.status.registry_version == "2"
    finally:
        service.stop()
