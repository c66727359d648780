"""Ground truth reaches the log: ``X-Prediction-ID`` on every answer and ``POST /feedback`` into
``prediction_feedback``, for every family, on SQLite and PostgreSQL, with the database going away
and the server stopped meanwhile. Real ``modelyard serve`` processes on 127.0.0.1."""

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bundle_factory import make_nilm_bundle
from log_tables import table_rows
from modelyard.core.bundle import Bundle
from modelyard.serving.feedback import FeedbackLog, FeedbackRecord
from modelyard.serving.log_schema import (
    dead_letters,
    feedback,
    metadata,
    predictions,
    prepare_schema,
)
from modelyard.serving.spool import Spool, spool_owner
from postgres_server import PostgresServer
from tabular_fixtures import VALID_ROW, build_avm_bundle
from test_prediction_log_faults import drop_tables
from test_prediction_log_process import serve
from test_serving_service import SERIES, samples, stop
from vision_fixtures import flat_png, make_vision_bundle

WINDOW = 15
HEX32 = re.compile(r"[0-9a-f]{32}")
ALICE = "alice-key-0123456789abcdef"


@pytest.fixture(scope="module")
def nilm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(tmp_path_factory.mktemp("feedback-nilm") / "bundle", window=WINDOW)


@pytest.fixture(scope="module")
def nilm_sqlite(
    nilm_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(server URL, log URL): one NILM server logging to SQLite."""
    log_url = f"sqlite:///{tmp_path_factory.mktemp('nilm-log')}/predictions.db"
    process, url = serve(nilm_bundle.path, log_url)
    yield url, log_url
    stop(process)


def rows(url: str, table: sa.Table) -> list[Any]:
    return table_rows(url, table)


def eventually(found: Callable[[], Any], seconds: float = 15.0) -> Any:
    """``found()`` once it is truthy (the logs write in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        value = found()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def feedback_rows(log_url: str, prediction_id: str) -> list[Any]:
    return [r for r in rows(log_url, feedback) if r.server_request_id == prediction_id]


def predict_nilm(url: str, series: list[float] = SERIES, **extra: Any) -> httpx.Response:
    response = httpx.post(f"{url}/predict", json={"aggregate_w": series, **extra}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def send(url: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/feedback", json=body, headers=headers, timeout=30)


def counter(url: str, outcome: str, **headers: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    key = ("modelyard_feedback_records_total", (("outcome", outcome),))
    return samples(text).get(key, 0.0)


# --- the prediction id ---------------------------------------------------------------------------


def test_every_answer_carries_the_prediction_id_that_keys_its_log_row(
    nilm_sqlite: tuple[str, str],
) -> None:
    url, log_url = nilm_sqlite
    answer = httpx.post(
        f"{url}/predict", json={"aggregate_w": SERIES}, headers={"X-Request-ID": "mine-1"}
    )
    refused = httpx.post(f"{url}/predict", json={"aggregate_w": "no"})
    health = httpx.get(f"{url}/health")
    prediction_id = answer.headers["X-Prediction-ID"]

    assert answer.status_code == 200 and refused.status_code == 422
    assert all(HEX32.fullmatch(r.headers["X-Prediction-ID"]) for r in (answer, refused, health))
    assert len({r.headers["X-Prediction-ID"] for r in (answer, refused, health)}) == 3
    logged = eventually(
        lambda: [r for r in rows(log_url, predictions) if r.server_request_id == prediction_id]
    )
    assert [r.request_id for r in logged] == ["mine-1"]
    schema = httpx.get(f"{url}/openapi.json").json()
    headers = schema["paths"]["/predict"]["post"]["responses"]["200"]["headers"]
    assert "X-Prediction-ID" in headers
    assert "/feedback" in schema["paths"]


# --- feedback stored, per family ---------------------------------------------------------------


def test_nilm_feedback_is_stored_from_memory_and_from_the_database(
    nilm_sqlite: tuple[str, str],
) -> None:
    """At once (the prediction still in the writer's buffer) and later (in the database): both
    stored, each its own row; a series of the predicted length and a mean are both truths."""
    url, log_url = nilm_sqlite
    prediction_id = predict_nilm(url).headers["X-Prediction-ID"]
    series_truth = {"appliances": {"kettle": [0.0] * len(SERIES), "microwave": 12.5}}
    first = send(url, {"prediction_id": prediction_id, "truth": series_truth})
    eventually(lambda: [r for r in rows(log_url, predictions) if r.server_request_id])
    time.sleep(0.5)  # the prediction written: looked up in the database
    second = send(url, {"prediction_id": prediction_id, "truth": {"appliances": {"kettle": 3}}})

    assert first.status_code == 200, first.text
    assert first.json() == {"detail": "1 feedback record(s) accepted", "records": 1, "checked": 1}
    assert second.status_code == 200, second.text
    stored = eventually(lambda: len(feedback_rows(log_url, prediction_id)) == 2 and
                        feedback_rows(log_url, prediction_id))  # fmt: skip
    assert [r.truth for r in stored] == [series_truth, {"appliances": {"kettle": 3.0}}]
    assert {r.model for r in stored} == {httpx.get(f"{url}/info").json()["name"]}
    assert stored[0].received_at <= stored[1].received_at


def test_nilm_valid_edges_predict_fewer_readings(nilm_sqlite: tuple[str, str]) -> None:
    url, _ = nilm_sqlite
    prediction_id = predict_nilm(url, edges="valid").headers["X-Prediction-ID"]
    predicted = len(SERIES) - WINDOW + 1
    wrong = send(url, {"prediction_id": prediction_id,
                       "truth": {"appliances": {"kettle": [1.0] * len(SERIES)}}})  # fmt: skip
    right = send(url, {"prediction_id": prediction_id,
                       "truth": {"appliances": {"kettle": [1.0] * predicted}}})  # fmt: skip

    assert wrong.status_code == 422
    assert wrong.json()["detail"] == (
        f"truth for kettle has {len(SERIES)} readings; the prediction had {predicted}"
    )
    assert right.status_code == 200, right.text


@pytest.fixture(scope="module")
def avm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_avm_bundle(tmp_path_factory, rows=300)[1]


def test_tabular_feedback_one_value_per_request_row(avm_bundle: Bundle, tmp_path: Path) -> None:
    log_url = f"sqlite:///{tmp_path}/predictions.db"
    process, url = serve(avm_bundle.path, log_url)
    try:
        target = httpx.get(f"{url}/info").json()["details"]["target"]
        two = httpx.post(f"{url}/predict", json=[VALID_ROW, VALID_ROW | {"area_m2": 60.0}])
        one = httpx.post(f"{url}/predict", json=VALID_ROW)
        two_id, one_id = two.headers["X-Prediction-ID"], one.headers["X-Prediction-ID"]
        batch = [
            {"prediction_id": two_id, "truth": {"rows": [{target: 41000}, {target: 39500.5}]}},
            {"prediction_id": one_id, "truth": {target: 40000.0}},  # one row, without "rows"
        ]
        accepted = send(url, batch)
        string_price = send(url, {"prediction_id": one_id, "truth": {target: "40000"}})
        row_count = send(url, {"prediction_id": two_id, "truth": {target: 40000.0}})
        unknown_field = send(url, {"prediction_id": one_id, "truth": {"price": 1.0}})
        metrics = {o: counter(url, o) for o in ("accepted", "invalid")}
    finally:
        stop(process)

    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["records"] == 2
    assert string_price.status_code == 422
    assert string_price.json()["detail"][0]["loc"] == ["body", "truth", "rows", 0, target]
    assert "40000" not in string_price.text  # the input is never echoed
    assert row_count.status_code == 422
    assert row_count.json()["detail"] == "truth has 1 row(s); the prediction valued 2"
    assert unknown_field.status_code == 422
    assert metrics == {"accepted": 2.0, "invalid": 3.0}
    truths = {r.server_request_id: r.truth for r in rows(log_url, feedback)}
    assert truths == {
        two_id: {"rows": [{target: 41000.0}, {target: 39500.5}]},
        one_id: {"rows": [{target: 40000.0}]},
    }


def test_vision_feedback_is_one_of_the_bundles_classes(tmp_path: Path) -> None:
    bundle = make_vision_bundle(tmp_path / "bundle", classes=("Forest", "River", "Sea"))
    log_url = f"sqlite:///{tmp_path}/predictions.db"
    process, url = serve(bundle.path, log_url)
    try:
        image = {"file": ("x.png", flat_png(32, 32), "image/png")}
        answer = httpx.post(f"{url}/predict", files=image)
        prediction_id = answer.headers["X-Prediction-ID"]
        right = send(url, {"prediction_id": prediction_id, "truth": {"label": "River"}})
        unknown = send(url, {"prediction_id": prediction_id, "truth": {"label": "Desert-xyz"}})
        not_text = send(url, {"prediction_id": prediction_id, "truth": {"label": 3}})
    finally:
        stop(process)

    assert answer.status_code == 200, answer.text
    assert right.status_code == 200, right.text
    assert unknown.status_code == 422 and not_text.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "truth", "label"]
    assert "Desert-xyz" not in unknown.text
    assert [(r.server_request_id, r.truth) for r in rows(log_url, feedback)] == [
        (prediction_id, {"label": "River"})
    ]


# --- refusals ------------------------------------------------------------------------------------


def test_an_unknown_prediction_id_is_404_and_nothing_is_stored(
    nilm_sqlite: tuple[str, str],
) -> None:
    url, log_url = nilm_sqlite
    known = predict_nilm(url).headers["X-Prediction-ID"]
    before = counter(url, "unknown_id")
    truth = {"appliances": {"kettle": 1.0}}
    unknown = send(url, {"prediction_id": "0" * 32, "truth": truth})
    mixed = send(url, [{"prediction_id": known, "truth": truth},
                       {"prediction_id": "f" * 32, "truth": truth}])  # fmt: skip
    not_an_id = send(url, {"prediction_id": "not-hex", "truth": truth})

    assert unknown.status_code == 404
    assert (
        unknown.json()["detail"] == f"no prediction of model 'nilm-seq2point' has the id {'0' * 32}"
    )
    assert mixed.status_code == 404  # a body is taken or refused whole
    assert not_an_id.status_code == 422
    assert counter(url, "unknown_id") - before == 3
    time.sleep(0.6)
    assert feedback_rows(log_url, known) == []


def test_wrong_shapes_are_422_with_a_sentence(nilm_sqlite: tuple[str, str]) -> None:
    url, _ = nilm_sqlite
    prediction_id = predict_nilm(url).headers["X-Prediction-ID"]
    bodies = {
        "wrong length": {"appliances": {"kettle": [1.0] * (len(SERIES) + 1)}},
        "unknown appliance": {"appliances": {"toaster": 1.0}},
        "no appliance": {"appliances": {}},
        "text watts": {"appliances": {"kettle": "12"}},
        "negative": {"appliances": {"kettle": -5.0}},
        "null watts": {"appliances": {"kettle": None}},
    }
    answers = {
        k: send(url, {"prediction_id": prediction_id, "truth": v}) for k, v in bodies.items()
    }
    too_many = send(url, [{"prediction_id": prediction_id, "truth": bodies["negative"]}] * 1001)
    not_json = httpx.post(
        f"{url}/feedback", content=b"{", headers={"Content-Type": "application/json"}
    )

    assert {k: a.status_code for k, a in answers.items()} == dict.fromkeys(bodies, 422)
    assert answers["wrong length"].json()["detail"] == (
        f"truth for kettle has {len(SERIES) + 1} readings; the prediction had {len(SERIES)}"
    )
    assert too_many.status_code == 422
    assert too_many.json()["detail"] == "send between 1 and 1000 feedback items, got 1001"
    assert not_json.status_code == 422
    assert all("Traceback" not in a.text for a in answers.values())


# --- PostgreSQL, the database down, SIGTERM -------------------------------------------------------


def test_postgresql_down_feedback_is_kept_checked_later_and_survives_sigterm(
    nilm_bundle: Bundle, postgres: PostgresServer
) -> None:
    """With PostgreSQL down: feedback for a prediction already written is accepted with 202 and
    checked once the database is back (a misfit one becomes a dead letter); feedback for a
    prediction still in memory is checked at once. The server is stopped (SIGTERM) while the
    database is away: what it held is spooled, and the next start writes it."""
    drop_tables(postgres.url)
    with sa.create_engine(postgres.url).begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS prediction_feedback"))
    process, url = serve(nilm_bundle.path, postgres.url)
    try:
        written = predict_nilm(url).headers["X-Prediction-ID"]
        eventually(lambda: [r for r in rows(postgres.url, predictions)
                            if r.server_request_id == written])  # fmt: skip
        stored_now = send(url, {"prediction_id": written, "truth": {"appliances": {"kettle": 7}}})
        postgres.stop()
        try:
            in_memory = predict_nilm(url).headers["X-Prediction-ID"]
            good = {"prediction_id": written, "truth": {"appliances": {"kettle": [2.0] * 40}}}
            misfit = {"prediction_id": written, "truth": {"appliances": {"kettle": [2.0] * 39}}}
            deferred = send(url, [good, misfit])
            memory_misfit = send(url, {"prediction_id": in_memory,
                                       "truth": {"appliances": {"kettle": [1.0] * 3}}})  # fmt: skip
            memory_good = send(url, {"prediction_id": in_memory,
                                     "truth": {"appliances": {"microwave": 4.0}}})  # fmt: skip
            deferred_count = counter(url, "deferred")
        finally:
            stop(process)  # SIGTERM while the database is away: the feedback is spooled
            postgres.start()
    finally:
        if process.poll() is None:
            stop(process)

    assert stored_now.status_code == 200, stored_now.text
    assert deferred.status_code == 202, deferred.text
    assert deferred.json()["checked"] == 0
    assert "stored for later" in deferred.json()["detail"]
    assert memory_misfit.status_code == 422  # found in memory: checked at once
    assert memory_good.status_code == 202 and memory_good.json()["checked"] == 1
    assert deferred_count == 3

    process, url = serve(nilm_bundle.path, postgres.url)  # replays both spools
    try:
        truths = eventually(
            lambda: len(rows(postgres.url, feedback)) == 3 and rows(postgres.url, feedback)
        )
        letters = eventually(lambda: rows(postgres.url, dead_letters))
    finally:
        stop(process)
    assert sorted((r.server_request_id, json.dumps(r.truth)) for r in truths) == sorted(
        [
            (written, json.dumps({"appliances": {"kettle": 7.0}})),
            (written, json.dumps(good["truth"])),
            (in_memory, json.dumps({"appliances": {"microwave": 4.0}})),
        ]
    )
    assert in_memory in {r.server_request_id for r in rows(postgres.url, predictions)}
    assert [r.server_request_id for r in letters] == [written]
    assert "truth for kettle has 39 readings; the prediction had 40" in letters[0].error


def test_postgresql_back_while_serving_writes_the_deferred_feedback(
    nilm_bundle: Bundle, postgres: PostgresServer
) -> None:
    drop_tables(postgres.url)
    process, url = serve(nilm_bundle.path, postgres.url)
    try:
        written = predict_nilm(url).headers["X-Prediction-ID"]
        eventually(lambda: [r for r in rows(postgres.url, predictions)
                            if r.server_request_id == written])  # fmt: skip
        postgres.stop()
        try:
            truth = {"appliances": {"kettle": 2.0}}
            deferred = send(url, {"prediction_id": written, "truth": truth})
        finally:
            postgres.start()
        stored = eventually(lambda: feedback_rows(postgres.url, written), seconds=30)
    finally:
        stop(process)

    assert deferred.status_code == 202, deferred.text
    assert [r.truth for r in stored] == [truth]


# --- API keys ------------------------------------------------------------------------------------


def test_feedback_needs_a_key_when_keys_are_configured(nilm_bundle: Bundle, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{ALICE}\n")
    keys.chmod(0o600)
    log_url = f"sqlite:///{tmp_path}/predictions.db"
    process, url = serve(nilm_bundle.path, log_url, "--api-key-file", str(keys))
    try:
        key = {"X-API-Key": ALICE}
        answer = httpx.post(f"{url}/predict", json={"aggregate_w": SERIES}, headers=key)
        body = {"prediction_id": answer.headers["X-Prediction-ID"],
                "truth": {"appliances": {"kettle": 1.0}}}  # fmt: skip
        without = send(url, body)
        wrong = send(url, body, Authorization="Bearer not-the-key-0000000000")
        with_key = send(url, body, **key)
    finally:
        stop(process)

    assert answer.status_code == 200
    assert without.status_code == 401 and wrong.status_code == 401
    assert with_key.status_code == 200, with_key.text


# --- the table ----------------------------------------------------------------------------------


def test_prepare_schema_adds_the_feedback_table_to_an_older_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            predictions.create(connection)  # a log written before feedback existed
            connection.execute(predictions.insert(), [{
                "request_id": "r", "server_request_id": "a" * 32, "created_at": datetime.now(UTC),
                "model": "m", "version": "v", "route": "/predict", "status": 200,
                "latency_ms": 1.0, "inputs": {}, "outputs": {},
            }])  # fmt: skip
            prepare_schema(connection)
            prepare_schema(connection)  # twice: nothing to do the second time
            tables = set(sa.inspect(connection).get_table_names())
            columns = {c["name"]: c for c in sa.inspect(connection).get_columns(feedback.name)}
            indexes = sa.inspect(connection).get_indexes(feedback.name)
            kept = connection.execute(sa.select(sa.func.count()).select_from(predictions))
            assert kept.scalar_one() == 1
    finally:
        engine.dispose()
    assert set(metadata.tables) <= tables
    assert set(columns) == {"id", "server_request_id", "received_at", "model", "truth"}
    assert any(i["column_names"] == ["server_request_id"] for i in indexes)


def test_a_fresh_log_knows_no_prediction_yet(nilm_bundle: Bundle, tmp_path: Path) -> None:
    """Before the first prediction is written there is no predictions table: an id is unknown
    (404), not a database that is down (202)."""
    process, url = serve(nilm_bundle.path, f"sqlite:///{tmp_path}/predictions.db")
    try:
        answer = send(url, {"prediction_id": "1" * 32, "truth": {"appliances": {"kettle": 1.0}}})
    finally:
        stop(process)
    assert answer.status_code == 404, answer.text
    assert (
        answer.json()["detail"] == f"no prediction of model 'nilm-seq2point' has the id {'1' * 32}"
    )


def test_feedback_has_its_own_spool_and_prediction_spools_keep_their_owner(tmp_path: Path) -> None:
    """A prediction spool written before feedback existed keeps its owner record (and so its
    directory); the feedback log's spool is another directory, so neither log ever replays the
    other's records into its table."""
    url = f"sqlite:///{tmp_path}/log.db"
    prediction_spool = Spool(tmp_path / "spool", url, "m")
    feedback_spool = Spool(tmp_path / "spool", url, "m", feedback.name)

    assert prediction_spool.owner == {"database": url, "model": "m"}  # as before feedback
    assert prediction_spool.owner == spool_owner(url, "m")
    assert feedback_spool.owner == prediction_spool.owner | {"table": "prediction_feedback"}
    assert feedback_spool.directory != prediction_spool.directory


def test_a_malformed_feedback_spool_line_becomes_a_dead_letter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    log = FeedbackLog(url, tmp_path / "spool", check=lambda *_: None, model="m")
    good = FeedbackRecord("r-1", "a" * 32, "m", {"label": "Sea"}, checked=True)
    log.spool.append([good.to_json(), '{"truth": "not a record"}'])
    log.stats.spool_pending = 2
    log.start()
    log.close()

    assert [(r.server_request_id, r.truth) for r in rows(url, feedback)] == [
        ("a" * 32, {"label": "Sea"})
    ]
    letters = rows(url, dead_letters)
    assert [r.error for r in letters] == ["spool line is not a record of the feedback log"]


def test_two_workers_take_feedback_for_each_others_predictions(
    nilm_bundle: Bundle, tmp_path: Path
) -> None:
    """Whichever worker answered the prediction, any worker takes its feedback once it is
    written; the counter adds up the workers."""
    log_url = f"sqlite:///{tmp_path}/predictions.db"
    process, url = serve(nilm_bundle.path, log_url, "--workers", "2")
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            ids = [
                http.post("/predict", json={"aggregate_w": SERIES}).headers["X-Prediction-ID"]
                for _ in range(20)
            ]
            eventually(lambda: len(rows(log_url, predictions)) >= 20)
            truth = {"appliances": {"microwave": 0.0}}
            answers = [http.post("/feedback", json={"prediction_id": i, "truth": truth})
                       for i in ids]  # fmt: skip
            accepted = counter(url, "accepted")
    finally:
        stop(process)

    assert [a.status_code for a in answers] == [200] * 20
    assert accepted == 20
    assert sorted(r.server_request_id for r in rows(log_url, feedback)) == sorted(ids)
