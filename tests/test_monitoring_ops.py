"""deploy/monitoring/ stays true to the code: the alert rules pass ``promtool check`` and their
``promtool test rules`` cases (each alert fires in one, stays silent in another), every query of
the rules and the Grafana dashboard is valid PromQL, and every metric name they read is one that
a real server exports (scraped from running servers) or one the monitor exports
(``monitoring.metric_names.ALL``). Also the server's metric hygiene: one unit per histogram of
predicted values, prediction-log counters whose sum means something, ``modelyard_model_info``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bundle_factory import make_nilm_bundle
from modelyard.core.bundle import Bundle
from modelyard.monitoring import metric_names
from modelyard.serving.context import PredictionEvent
from modelyard.serving.log_schema import prepare_schema
from modelyard.serving.metrics import MULTIPROC_ENV, ServiceMetrics
from modelyard.serving.prediction_log import PredictionLog
from modelyard.serving.server_process import running_server
from modelyard.serving.value_units import RATIO, WATTS, target_unit
from promql_names import selected
from test_prediction_log import record, wait_for
from test_prediction_log_faults import poison
from vision_fixtures import make_vision_bundle, photo

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "prometheus" / "rules.yml"
RULES_TEST = MONITORING / "prometheus" / "rules_test.yml"
DASHBOARD = MONITORING / "grafana" / "modelyard.json"
PREDICTIONS = 5
SERIES = [250.0 + 10 * (i % 7) for i in range(40)]
#: what Grafana puts in place of its own interval variables
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """promtool from Debian's prometheus package (`make promtool` installs it)."""
    executable = shutil.which("promtool")
    assert executable, "promtool is missing: `make promtool` (apt-get install prometheus)"
    return subprocess.run(
        [executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# --- the servers whose /metrics the queries must match -------------------------------------------


def scrape_after_predictions(url: str, predict: Any) -> str:
    """``PREDICTIONS`` predictions, then /metrics once the prediction log has written them."""
    with httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.1)
        for _ in range(PREDICTIONS):
            assert predict(client).status_code == 200
        while True:
            text = client.get("/metrics").text
            found = samples(text)
            written = found.get(
                ("modelyard_prediction_log_records_total", (("outcome", "written"),)), 0
            )
            if written >= PREDICTIONS or time.monotonic() > deadline:
                return text
            time.sleep(0.1)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition -> {(sample name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def nilm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(tmp_path_factory.mktemp("nilm") / "bundle", window=15)


@pytest.fixture(scope="module")
def scraped(nilm_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """/metrics of a NILM server with two workers (multiprocess metrics) and of a one-worker
    vision server, each after a few predictions logged to SQLite."""
    logs = tmp_path_factory.mktemp("logs")
    vision = make_vision_bundle(tmp_path_factory.mktemp("vision") / "bundle")
    found = {}
    nilm_args = ["--workers", "2", "--prediction-log", f"sqlite:///{logs}/nilm.db"]
    with running_server(nilm_bundle.path, extra_args=nilm_args) as url:
        found["nilm"] = scrape_after_predictions(
            url, lambda c: c.post("/predict", json={"aggregate_w": SERIES})
        )
    vision_args = ["--prediction-log", f"sqlite:///{logs}/vision.db"]
    with running_server(vision.path, extra_args=vision_args) as url:
        found["vision"] = scrape_after_predictions(
            url, lambda c: c.post("/predict", files={"file": ("a.png", photo(32, 32))})
        )
    return found


@pytest.fixture(scope="module")
def exported(scraped: dict[str, str]) -> set[str]:
    """Every series name the servers export (``_total``, ``_bucket``... as scraped) and every
    name the monitor exports."""
    names = {name for text in scraped.values() for name, _ in samples(text)}
    return names | set(metric_names.ALL)


# --- the alert rules -------------------------------------------------------------------------


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    """A silent case: an evaluation expecting no alert, or an input series (told apart by the
    alert's labels) for which none is expected."""
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    for alert in alert_names():
        fires = silent = False
        for case in tests:
            checks = [c for c in case.get("alert_rule_test", []) if c["alertname"] == alert]
            if not checks:
                continue
            expected = [a["exp_labels"] for c in checks for a in c["exp_alerts"]]
            fires |= bool(expected)
            silent |= any(not c["exp_alerts"] for c in checks)
            for series in case["input_series"]:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', series["series"]))
                silent |= bool(expected) and not any(
                    all(labels.get(k) == v for k, v in e.items() if k in labels) for e in expected
                )
        assert fires, f"no case of rules_test.yml fires {alert}"
        assert silent, f"no case of rules_test.yml shows {alert} silent"


# --- every query: valid PromQL, and only names that exist -------------------------------------


def rule_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries(units: set[str]) -> list[str]:
    """Every panel's query, Grafana's variables replaced: intervals by durations, ``$unit`` by
    each unit noun the servers export, the rest by a plain value."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, duration in GRAFANA_INTERVALS.items():
                expr = expr.replace(variable, duration)
            expanded = (
                [expr.replace("${unit}", noun) for noun in sorted(units)]
                if "${unit}" in expr
                else [expr]
            )
            found += [re.sub(r"\$\{?\w+\}?", "x", e) for e in expanded]
    return found


def variable_queries() -> dict[str, str]:
    return {
        variable["name"]: variable["query"]
        for variable in dashboard()["templating"]["list"]
        if variable["type"] == "query"
    }


def unit_nouns(exported: set[str]) -> set[str]:
    """The units of the predicted-value histograms, as the dashboard's ``unit`` variable finds
    them (its query and its regex)."""
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "unit")
    pattern = re.fullmatch(r"metrics\((.+)\)", variable["query"])
    assert pattern, variable["query"]
    capture = re.compile(variable["regex"].strip("/"))
    return {
        match.group(1)
        for name in exported
        if re.fullmatch(pattern.group(1), name) and (match := capture.search(name))
    }


def test_every_dashboard_and_rule_query_is_valid_promql(exported: set[str], tmp_path: Path) -> None:
    """promtool checks the dashboard's queries as recording rules (it has no bare parser)."""
    queries = dashboard_queries(unit_nouns(exported))
    rules = [{"record": f"dashboard:query_{n}", "expr": q} for n, q in enumerate(queries)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(queries)} rules found" in checked.stdout


def test_every_metric_the_dashboard_and_rules_read_exists(exported: set[str]) -> None:
    units = unit_nouns(exported)
    assert units == {WATTS.noun, RATIO.noun}, units  # the two servers' prediction histograms
    queries = rule_queries() + dashboard_queries(units)
    for name, query in variable_queries().items():
        if name != "unit":  # label_values(SELECTOR, label)
            queries.append(query.removeprefix("label_values(").rsplit(",", 1)[0])
    missing = {}
    for query in queries:
        picked = selected(query)
        assert picked.names or picked.patterns, f"no metric found in {query!r}"
        for name in picked.names - exported:
            missing[name] = query
        for pattern in picked.patterns:
            if not any(re.fullmatch(pattern, name) for name in exported):
                missing[pattern] = query
    assert not missing, f"queried but not exported: {missing}"


def test_the_name_check_catches_a_suffixless_or_misspelt_name(exported: set[str]) -> None:
    """The check above resolves counters and histograms by their series names: the family name
    alone (no ``_total``/``_bucket``) or an old name does not pass."""
    for query in (
        "rate(modelyard_http_requests[5m])",
        "histogram_quantile(0.99, rate(modelyard_http_request_duration_seconds[5m]))",
        "sum(modelyard_prediction_log_buffered)",
        'sum by (le) (rate(modelyard_prediction_value_bucket{output="kettle"}[5m]))',
    ):
        assert selected(query).names - exported, query
    assert not selected("sum by (le) (rate(modelyard_batch_rows_bucket[5m]))").names - exported


def test_the_dashboard_reads_the_datasource_from_a_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        for holder in [panel, *panel.get("targets", [])]:
            if "datasource" in holder:
                assert holder["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


# --- the server's metric hygiene --------------------------------------------------------------


def test_prediction_log_outcomes_add_up_to_the_records_queued(scraped: dict[str, str]) -> None:
    """Summed over ``outcome``, the records counter means records settled: here, with the
    database up, each prediction once (it used to count each one as recorded and written)."""
    for family, text in scraped.items():
        found = samples(text)
        outcomes = {
            dict(labels)["outcome"]: value
            for (name, labels), value in found.items()
            if name == "modelyard_prediction_log_records_total"
        }
        assert outcomes == {"written": PREDICTIONS, "dead_letter": 0, "lost": 0}, family
        queued = found[("modelyard_prediction_log_queued_records_total", ())]
        assert queued == sum(outcomes.values()) == PREDICTIONS, family
        assert found[("modelyard_prediction_log_buffered_records", ())] == 0
        assert found[("modelyard_prediction_log_spool_pending_records", ())] == 0
        assert found[("modelyard_prediction_log_replayed_records_total", ())] == 0


def test_a_dead_letter_kept_nowhere_counts_once_as_lost(tmp_path: Path) -> None:
    """The database refuses a record, then its dead letter (a trigger), and neither the spool
    directory nor the fallback can be written: the record is in the error log only. It is
    one record, so one outcome: lost (it used to count as a dead letter too)."""
    url = f"sqlite:///{tmp_path}/predictions.db"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        prepare_schema(connection)
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON prediction_dead_letters "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    engine.dispose()
    log = PredictionLog(url, spool_dir=tmp_path / "spool", model="nilm-seq2point")
    shutil.rmtree(log.spool_dir)
    log.spool_dir.write_text("in the way")
    (tmp_path / "blocked").write_text("not a directory either")
    log.spool.fallback = tmp_path / "blocked" / "fallback"
    log.start()
    log.record(record(1))
    log.record(poison(2, status=2**70))
    wait_for(lambda: log.stats.written + log.stats.dead_letters + log.stats.lost == 2)
    log.close()
    metrics = ServiceMetrics()
    metrics.update_log(log.stats)
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples(metrics.exposition().decode()).items()
        if name == "modelyard_prediction_log_records_total"
    }
    assert outcomes == {"written": 1, "dead_letter": 0, "lost": 1}


def test_predicted_values_have_one_unit_per_histogram(scraped: dict[str, str]) -> None:
    nilm, vision = samples(scraped["nilm"]), samples(scraped["vision"])
    for appliance in ("kettle", "microwave"):
        assert nilm[("modelyard_prediction_watts_count", (("output", appliance),))] == PREDICTIONS
    assert (
        vision[("modelyard_prediction_ratio_count", (("output", "top1_probability"),))]
        == PREDICTIONS
    )
    bounds = {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(scraped["vision"])
        for sample in family.samples
        if sample.name == "modelyard_prediction_ratio_bucket"
    }
    assert set(bounds) == {*RATIO.buckets, float("inf")}  # its own buckets, ending at 1
    assert bounds[1.0] == bounds[float("inf")] == PREDICTIONS
    for found in (nilm, vision):
        assert not [name for name, _ in found if name.startswith("modelyard_prediction_value")]
    assert not [n for n, _ in nilm if n.startswith("modelyard_prediction_ratio")]
    assert not [n for n, _ in vision if n.startswith("modelyard_prediction_watts")]


def test_model_info_names_the_served_model(scraped: dict[str, str], nilm_bundle: Bundle) -> None:
    """Two workers (multiprocess mode) report it once, without a pid label."""
    manifest = nilm_bundle.manifest
    info = [(dict(labels), value) for (name, labels), value in samples(scraped["nilm"]).items()
            if name == "modelyard_model_info"]  # fmt: skip
    served = {"model": manifest.name, "version": manifest.version, "sha256": manifest.sha256}
    assert info == [(served | {"quantized": "false"}, 1.0)]


def test_set_model_info_replaces_the_previous_version() -> None:
    metrics = ServiceMetrics()
    metrics.set_model_info("avm", "1", "a" * 64, quantized=False)
    metrics.set_model_info("avm", "2", "b" * 64, quantized=True)
    info = [
        (dict(labels), value)
        for (name, labels), value in samples(metrics.exposition().decode()).items()
        if name == "modelyard_model_info"
    ]
    assert info == [({"model": "avm", "version": "2", "sha256": "b" * 64, "quantized": "true"}, 1)]


SWAP_IN_A_WORKER = """
from modelyard.serving.metrics import MULTIPROC_ENV, ServiceMetrics
metrics = ServiceMetrics()
metrics.set_model_info("avm", "1", "a" * 64, quantized=False)
metrics.set_model_info("avm", "2", "b" * 64, quantized=False)
print(metrics.exposition().decode())
"""


def test_set_model_info_in_multiprocess_mode_leaves_only_the_new_version_at_1(
    tmp_path: Path,
) -> None:
    """Several workers: a series cannot be removed from the shared files, so the old version
    reads 0 (the dashboard and docs query ``== 1``); no warning about removing labels."""
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", SWAP_IN_A_WORKER],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = {
        dict(labels)["version"]: value
        for (name, labels), value in samples(done.stdout).items()
        if name == "modelyard_model_info"
    }
    assert info == {"1": 0.0, "2": 1.0}


def test_a_prediction_event_with_values_must_say_their_unit() -> None:
    with pytest.raises(ValueError, match="unit"):
        PredictionEvent(inputs={}, outputs={}, values={"price": [1.0]})
    assert PredictionEvent(inputs={}, outputs={}).unit is None  # no values, no unit needed


@pytest.mark.parametrize(
    ("configured", "noun"),
    [("DKK/m2", "dkk_per_m2"), ("USD/sqft", "usd_per_sqft"), ("", "target_units"),
     ("%", "percent"), ("m²", "m2"), ("2x", "units_2x")],
)  # fmt: skip
def test_a_tabular_target_unit_becomes_the_histogram_name(configured: str, noun: str) -> None:
    unit = target_unit(configured, "price_per_m2")
    assert unit.metric_name == f"modelyard_prediction_{noun}"


def test_units_fit_their_values() -> None:
    """Probabilities end at 1, watts reach a cooker's, a tabular target spans decades."""
    assert RATIO.buckets[-1] == 1.0 and all(0 < b <= 1 for b in RATIO.buckets)
    assert WATTS.buckets[0] <= 1 and WATTS.buckets[-1] >= 10_000
    prices = target_unit("DKK/m2", "price_per_m2").buckets
    assert prices[0] <= 0.01 and prices[-1] >= 1e6
