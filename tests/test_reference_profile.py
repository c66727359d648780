"""The reference profile in the bundle and the drift features the server logs (NILM, tabular).

Fast tests use a small untrained NILM bundle (real ONNX Runtime, the real app with a real SQLite
log); the slow ones export the session's quick NILM and AVM pipelines and compare the profile
with what a real server logged for the bundle's example request."""

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import warnings
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundle_factory import make_nilm_bundle
from log_tables import table_rows
from modelyard.core.bundle import MANIFEST_FILE, Bundle, load_bundle, write_bundle
from modelyard.core.errors import BundleError
from modelyard.core.families import drift_rows_function
from modelyard.core.reference_profile import MAX_ROWS, PROFILE_FILE, Column, ReferenceProfile
from modelyard.projects.nilm import drift_features as nilm
from modelyard.projects.nilm.contract import NilmContract
from modelyard.projects.nilm.inference import predict_series
from modelyard.projects.nilm.reference import reference_profile as nilm_reference
from modelyard.projects.tabular import drift_features as tabular
from modelyard.serving.adapter import bundle_example
from modelyard.serving.app import create_app
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server
from modelyard.serving.settings import ServerSettings
from nilm_fixtures import make_house
from trained_pipelines import Pipeline

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

WINDOW = 15
APPLIANCES = ("kettle", "microwave")


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """An untrained NILM bundle exported without a profile (as before issue 16)."""
    return make_nilm_bundle(tmp_path_factory.mktemp("small") / "bundle", window=WINDOW)


def hand_profile(rows: int = 3) -> ReferenceProfile:
    return ReferenceProfile(
        family="nilm",
        drawn="three hand-written rows",
        seed=0,
        columns={"mains_mean_w": Column("numerical", "input")},
        data={"mains_mean_w": [400.0 + i for i in range(rows)]},
        metrics={"overall": {"kettle": {"model": {"mae_w": 12.5}}}},
    )


def with_profile(source: Bundle, target: Path, profile: ReferenceProfile) -> Bundle:
    """``source`` written again, with ``profile`` as its reference profile."""
    profile_path = target.parent / "profile.json"
    profile.write(profile_path)
    fields = source.manifest.model_dump(
        exclude={"sha256", "model_file", "integrity", "format_version", "reference_profile"}
    )
    return write_bundle(target, source.model_path, fields, profile_file=profile_path)


def logged_rows(url: str) -> list[Any]:
    return table_rows(url)


def serve_with_test_client(bundle: Bundle, url: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """Post ``bodies`` to the real app (real SQLite log); the JSON responses."""
    app = create_app(bundle, settings=ServerSettings(prediction_log=url))
    with TestClient(app) as client:
        responses = [client.post("/predict", json=body) for body in bodies]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json() for r in responses]


# --- the profile in the bundle -----------------------------------------------------------------


def test_the_manifest_records_the_profile_and_the_bundle_reads_it(
    small_bundle: Bundle, tmp_path: Path
) -> None:
    profile = hand_profile()
    bundle = with_profile(small_bundle, tmp_path / "bundle", profile)
    record = bundle.manifest.reference_profile
    assert record is not None and record.file == PROFILE_FILE
    raw = json.loads((bundle.path / MANIFEST_FILE).read_text())
    assert raw["reference_profile"]["sha256"] == record.sha256 and len(record.sha256) == 64
    assert bundle.reference_profile() == profile
    assert load_bundle(bundle.path).reference_profile().metrics == profile.metrics


def test_a_changed_or_missing_profile_file_is_refused_at_load(
    small_bundle: Bundle, tmp_path: Path
) -> None:
    bundle = with_profile(small_bundle, tmp_path / "bundle", hand_profile())
    changed = tmp_path / "changed"
    shutil.copytree(bundle.path, changed)
    hand_profile(rows=4).write(changed / PROFILE_FILE)
    with pytest.raises(BundleError, match=r"reference_profile.json failed its integrity check"):
        load_bundle(changed)
    (changed / PROFILE_FILE).unlink()
    with pytest.raises(BundleError, match=r"reference profile reference_profile.json is missing"):
        load_bundle(changed)


def test_a_profile_changed_after_loading_is_refused_when_read(
    small_bundle: Bundle, tmp_path: Path
) -> None:
    bundle = with_profile(small_bundle, tmp_path / "bundle", hand_profile())
    hand_profile(rows=5).write(bundle.path / PROFILE_FILE)
    with pytest.raises(BundleError, match=r"failed its integrity check"):
        bundle.reference_profile()


def test_the_profile_record_is_covered_by_the_manifest_digest(
    small_bundle: Bundle, tmp_path: Path
) -> None:
    bundle = with_profile(small_bundle, tmp_path / "bundle", hand_profile())
    other = hand_profile(rows=6)
    other.write(bundle.path / PROFILE_FILE)
    manifest = bundle.path / MANIFEST_FILE
    raw = json.loads(manifest.read_text())
    raw["reference_profile"]["sha256"] = (
        __import__("hashlib").sha256((bundle.path / PROFILE_FILE).read_bytes()).hexdigest()
    )
    manifest.write_text(json.dumps(raw))  # a matching sha256, but the digest is not resealed
    with pytest.raises(BundleError, match=r"changed after export"):
        load_bundle(bundle.path)


def test_export_writes_the_metrics_as_the_manifest_keeps_them(tmp_path: Path) -> None:
    from modelyard.stages.export import _reference_profile

    class OneProfileTask:
        cfg = None

        def reference_profile(self, *args: Any) -> ReferenceProfile:
            return hand_profile()

    onnx_path = tmp_path / "model.onnx"
    metrics = {"overall": {"kettle": {"f1": float("nan"), "mae_w": 12.5}}}
    path = _reference_profile(OneProfileTask(), None, {}, onnx_path, metrics)  # type: ignore[arg-type]
    assert path == tmp_path / PROFILE_FILE
    written = ReferenceProfile.read(path)
    assert written.metrics == {"overall": {"kettle": {"f1": None, "mae_w": 12.5}}}
    assert written.data == hand_profile().data


def test_a_bundle_without_a_profile_loads_serves_and_says_to_re_export(
    small_bundle: Bundle, tmp_path: Path
) -> None:
    bundle = load_bundle(small_bundle.path)
    assert bundle.manifest.reference_profile is None
    with pytest.raises(BundleError, match=r"has no reference profile.*`modelyard export`"):
        bundle.reference_profile()
    serve_with_test_client(bundle, f"sqlite:///{tmp_path}/log.db", [{"aggregate_w": [300.0] * 20}])


# --- NILM drift features -------------------------------------------------------------------------


def test_a_request_is_described_by_at_most_a_bounded_number_of_window_chunks() -> None:
    assert nilm.chunk_starts(WINDOW, WINDOW) == [0]
    assert nilm.chunk_starts(WINDOW - 4, WINDOW) == [0]
    assert nilm.chunk_starts(3 * WINDOW, WINDOW) == [0, WINDOW, 2 * WINDOW]
    long = nilm.chunk_starts(10_000, WINDOW)
    assert len(long) == nilm.MAX_CHUNK_ROWS and long[0] == 0 and long[-1] == 10_000 - WINDOW
    assert np.all(np.diff(long) > WINDOW)  # evenly spaced over the whole request


def test_chunk_features_by_hand() -> None:
    # 22:58 .. 23:02 at one-minute readings: two day readings, three night readings
    chunk = np.array([100.0, 100.0, 2500.0, 2500.0, 100.0])
    start = nilm.seconds_of_day(datetime(2026, 1, 5, 22, 58))
    assert nilm.summary(chunk) == {
        "mean_w": 1060.0,
        "std_w": round(math.sqrt((3 * 960**2 + 2 * 1440**2) / 5), 2),
        "min_w": 100.0,
        "max_w": 2500.0,
    }
    assert nilm.extras(chunk, 60, start) == {
        "above_2kw_share": 0.4,
        "steps_per_hour": 30.0,  # 2 steps in 4 minutes
        "day_mean_w": 100.0,
        "night_mean_w": round(5100 / 3, 2),
    }
    without_start = nilm.extras(chunk, 60, None)
    assert without_start["day_mean_w"] is None is without_start["night_mean_w"]


def test_night_ranges_agree_with_the_clock_of_every_reading() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        day_second, readings = float(rng.uniform(0, 86_400)), int(rng.integers(1, 3000))
        interval = int(rng.choice([1, 6, 60, 600]))
        clock = np.remainder(np.arange(readings) * float(interval) + day_second, 86_400)
        expected = (clock < nilm.DAY_START_S) | (clock >= nilm.NIGHT_START_S)
        found = np.zeros(readings, dtype=bool)
        for first, stop in nilm.night_ranges(day_second, readings, interval):
            found[first:stop] = True
        assert (found == expected).all(), (day_second, readings, interval)


def test_served_requests_log_rows_named_like_the_profile(
    small_bundle: Bundle, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    series = [300.0 + 40 * (i % 9) + (2600.0 if 30 <= i < 34 else 0.0) for i in range(200)]
    bodies = [
        {"aggregate_w": series[:WINDOW], "start": "2026-01-05T06:50:00"},
        {"aggregate_w": series, "edges": "valid"},
        {"aggregate_w": series},
        {"aggregate_w": series[:WINDOW], "edges": "valid"},
    ]
    responses = serve_with_test_client(small_bundle, url, bodies)
    logged = logged_rows(url)
    expected = {n for n, c in nilm.columns(APPLIANCES).items() if c.group != "target"}
    rows = [drift_rows_function("nilm")(r.inputs, r.outputs) for r in logged]
    assert [len(r) for r in rows] == [1, nilm.MAX_CHUNK_ROWS, nilm.MAX_CHUNK_ROWS, 1]
    for row in (row for request in rows for row in request):
        assert set(row) == expected
        for name in expected - {"mains_day_mean_w", "mains_night_mean_w"}:
            assert isinstance(row[name], float) and math.isfinite(row[name]), name
    one = rows[0][0]
    assert one["mains_mean_w"] == pytest.approx(np.mean(series[:WINDOW]), abs=1e-3)
    assert one["mains_day_mean_w"] is not None and one["mains_night_mean_w"] is not None
    # the prediction logged for a chunk is the response's value at the chunk's midpoint reading
    starts = nilm.chunk_starts(len(series), WINDOW)
    for request, response, first in (
        (rows[1], responses[1], WINDOW // 2),
        (rows[2], responses[2], 0),
    ):
        for start, row in zip(starts, request, strict=True):
            for name in APPLIANCES:
                value = response["appliances"][name][start + WINDOW // 2 - first]
                assert row[nilm.predicted_column(name)] == pytest.approx(value, abs=0.01)
    assert rows[1] == rows[2]  # the same chunks, whatever the edges
    # a one-window request: the same row whatever the edges (valid answers the midpoint only)
    assert rows[3][0] == {**rows[0][0], "mains_day_mean_w": None, "mains_night_mean_w": None}
    for name in APPLIANCES:
        value = responses[0]["appliances"][name][WINDOW // 2]
        assert rows[0][0][nilm.predicted_column(name)] == pytest.approx(value, abs=0.01)


def test_nilm_log_rows_tolerate_rows_of_older_servers_and_garbage() -> None:
    old_inputs = {
        "length": 99,
        "edges": "pad",
        "start": None,
        "mean_w": 400.0,
        "std_w": 20.0,
        "min_w": 300.0,
        "max_w": 900.0,
    }
    old_outputs = {"kettle": {"mean_w": 12.0, "max_w": 40.0, "energy_wh": 1.0}}
    (row,) = nilm.log_rows(old_inputs, old_outputs)
    assert row["mains_mean_w"] == 400.0 and row["mains_max_w"] == 900.0
    assert row["predicted_kettle_w"] == 12.0
    assert row["mains_above_2kw_share"] is None and row["mains_steps_per_hour"] is None
    assert nilm.log_rows(None, None) == [] and nilm.log_rows([1, 2], "x") == []
    assert nilm.log_rows({"truncated": True, "chars": 10, "head": "{"}, {}) == []
    broken = nilm.log_rows(
        {"chunks": {"mains_mean_w": ["a", None, 2.0], "mains_std_w": 5}},
        {"kettle": 3, "microwave": {"chunk_w": [1.0, "b"]}},
    )
    assert [r["mains_mean_w"] for r in broken] == [None, None, 2.0]
    assert all(r["mains_std_w"] is None and r["predicted_kettle_w"] is None for r in broken)
    assert [r["predicted_microwave_w"] for r in broken] == [1.0, None, None]
    endless = nilm.log_rows({"chunks": {"mains_mean_w": [1.0] * 10_000}}, {})
    assert len(endless) == nilm.MAX_CHUNK_ROWS


def reference_houses() -> list[Any]:
    """Two training houses: 7 hours at one-minute readings, one with a gap."""
    return [
        make_house("a", 420, invalid=(100, 101)),
        make_house("b", 420, seed=1, start_ns=1_700_003_600 * 1_000_000_000),
    ]


def test_the_nilm_reference_is_bounded_seeded_and_predicted_like_the_server(
    small_bundle: Bundle,
) -> None:
    contract = NilmContract.from_manifest(small_bundle.manifest)
    houses = reference_houses()
    profile = nilm_reference(houses, contract, small_bundle.model_path, seed=3, rows=50)
    assert profile.rows == 50 and profile.family == "nilm" and "seed 3" in profile.drawn
    assert dict(profile.columns) == nilm.columns(APPLIANCES)
    again = nilm_reference(houses, contract, small_bundle.model_path, seed=3, rows=50)
    assert again.to_json() == profile.to_json()
    other = nilm_reference(houses, contract, small_bundle.model_path, seed=4, rows=50)
    assert other.data["mains_mean_w"] != profile.data["mains_mean_w"]
    everything = nilm_reference(houses, contract, small_bundle.model_path, seed=3, rows=10**6)
    gap_free = (420 - WINDOW + 1 - (WINDOW + 1)) + (420 - WINDOW + 1)  # 2-reading gap
    assert everything.rows == gap_free <= MAX_ROWS
    # make_house's mains are 1000 + i (house a): a window's mean names its start; its midpoint
    # prediction must be what the server predicts for that reading of the whole series
    watts = predict_series(
        houses[0].aggregate, OnnxModel(small_bundle.model_path).run, contract.normalisation, WINDOW
    )
    for mean, predicted in zip(
        profile.data["mains_mean_w"], profile.data["predicted_kettle_w"], strict=True
    ):
        assert isinstance(mean, float) and isinstance(predicted, float)
        if mean < 10_000:  # house a
            start = round(mean - 1000 - WINDOW // 2)
            assert predicted == pytest.approx(float(watts[start + WINDOW // 2, 0]), abs=0.01)


def test_the_nilm_reference_expects_the_accuracy_of_its_own_windows(
    small_bundle: Bundle,
) -> None:
    """The evaluation scores another house; the profile records the model's MAE and F1 on its
    own windows (midpoint prediction against the metered midpoint), computed here by hand."""
    contract = NilmContract.from_manifest(small_bundle.manifest)
    houses = [dataclasses.replace(h, appliances=APPLIANCES) for h in reference_houses()]
    profile = nilm_reference(houses, contract, small_bundle.model_path, seed=3, rows=200)
    truths: dict[str, list[float]] = {name: [] for name in APPLIANCES}
    for mean in profile.data["mains_mean_w"]:
        assert isinstance(mean, float)
        house = houses[1] if mean >= 11_000 else houses[0]  # make_house: mains 1000 + i (+ 10,000)
        middle = round(mean - (11_000 if mean >= 11_000 else 1000))
        for j, name in enumerate(APPLIANCES):
            truths[name].append(float(house.targets[middle, j]))
    expected = profile.expected_metrics
    for name, threshold in zip(APPLIANCES, contract.on_thresholds, strict=True):
        true = np.array(truths[name])
        predicted = np.array(profile.data[f"predicted_{name}_w"], dtype=np.float64)
        assert expected[f"{name}.mae_w"] == pytest.approx(np.mean(np.abs(true - predicted)))
        hits = np.sum((true > threshold) & (predicted > threshold))
        f1 = 2 * hits / (np.sum(true > threshold) + np.sum(predicted > threshold))
        assert expected[f"{name}.f1"] == pytest.approx(f1)
    assert "200 windows" in profile.expected_drawn and "midpoint" in profile.expected_drawn
    assert ReferenceProfile.from_json(profile.to_json()) == profile


def test_profiles_without_expected_metrics_still_read_and_half_a_pair_is_refused() -> None:
    old = hand_profile().to_json()
    del old["expected_metrics"], old["expected_drawn"]  # as written before they existed
    read = ReferenceProfile.from_json(old)
    assert read.expected_metrics == {} and read.expected_drawn == ""
    with pytest.raises(ValueError, match="expected_metrics without expected_drawn"):
        ReferenceProfile.from_json({**old, "expected_metrics": {"kettle.f1": 0.8}})
    with pytest.raises(ValueError, match="not a finite number"):
        ReferenceProfile.from_json(
            {**old, "expected_metrics": {"kettle.f1": "high"}, "expected_drawn": "by hand"}
        )


# --- tabular drift features ----------------------------------------------------------------------


def test_tabular_log_rows_type_every_field_and_name_the_predictions() -> None:
    inputs = [
        {"area_m2": 82.0, "zip_code": 2100, "side": "th", "floor": None, "sale_date": "2020-07-02"},
        {"area_m2": 50.0, "zip_code": "0800", "side": None, "floor": 2.0, "sale_date": None},
    ]
    outputs = [
        {"price_per_m2": 41000.0, "total_price": 3362000.0, "warnings": []},
        {"price_per_m2": 30000.0, "total_price": 1500000.0, "warnings": ["zip_code new"]},
    ]
    first, second = tabular.log_rows(inputs, outputs)
    assert first == {
        "area_m2": 82.0,
        "zip_code": "2100",
        "side": "th",
        "floor": None,
        "sale_date": 2020.5,
        "predicted_price_per_m2": 41000.0,
        "predicted_total_price": 3362000.0,
    }
    assert second["zip_code"] == "0800" and second["sale_date"] is None
    assert tabular.decimal_year(date(2020, 1, 1)) == 2020.0


def test_tabular_log_rows_tolerate_odd_records() -> None:
    assert tabular.log_rows(None, None) == [] and tabular.log_rows("text", []) == []
    truncated = {"truncated": True, "chars": 1_200_000, "head": '[{"area_m2": 1.0'}
    assert tabular.log_rows(truncated, []) == []
    (row,) = tabular.log_rows([{"area_m2": float("nan"), "x": [1]}, 5], [{"price": "a"}])
    assert row == {"area_m2": None, "x": None, "predicted_price": None}
    (unpaired,) = tabular.log_rows([{"area_m2": 80.0}], {"price_per_m2": 1.0})
    assert unpaired == {"area_m2": 80.0}  # outputs not a list: no prediction to pair


# --- the real pipelines: export writes the profile, a real server logs the same columns ----------


def served_drift_rows(bundle: Bundle, tmp_path: Path) -> list[dict[str, Any]]:
    """The bundle's example request posted to a real server; its log record as drift rows."""
    url = f"sqlite:///{tmp_path}/predictions.db"
    example = bundle_example(bundle)
    with running_server(bundle.path, extra_args=["--prediction-log", url]) as base:
        import httpx

        response = httpx.post(f"{base}/predict", timeout=30, **example.httpx_arguments())
        assert response.status_code == 200, response.text
    (record,) = logged_rows(url)
    rows: list[dict[str, Any]] = drift_rows_function(bundle.manifest.task)(
        record.inputs, record.outputs
    )
    return rows


def check_profile_against_served_rows(pipeline: Pipeline, tmp_path: Path) -> ReferenceProfile:
    bundle = pipeline.bundle
    profile = load_bundle(bundle.path).reference_profile()
    assert profile.family == bundle.manifest.task
    assert 0 < profile.rows <= MAX_ROWS and f"seed {pipeline.cfg.seed}" in profile.drawn
    assert profile.metrics == bundle.manifest.metrics
    rows = served_drift_rows(bundle, tmp_path)
    assert rows
    logged = {n for n, c in profile.columns.items() if c.group != "target"}
    for row in rows:
        assert set(row) == logged
        for name, value in row.items():
            if profile.columns[name].kind == "numerical" and value is not None:
                assert isinstance(value, float) and math.isfinite(value), name
            elif value is not None:
                assert isinstance(value, str), name
    for name, values in profile.data.items():
        assert any(v is not None for v in values), name
    return profile


@pytest.mark.slow
@pytest.mark.integration
def test_the_nilm_export_writes_a_profile_the_served_log_matches(
    nilm_pipeline: Pipeline, tmp_path: Path
) -> None:
    profile = check_profile_against_served_rows(nilm_pipeline, tmp_path)
    assert profile.rows == MAX_ROWS
    assert {c.group for c in profile.columns.values()} == {"input", "prediction"}


@pytest.mark.slow
@pytest.mark.integration
def test_the_avm_export_writes_a_profile_the_served_log_matches(
    avm_pipeline: Pipeline, tmp_path: Path
) -> None:
    profile = check_profile_against_served_rows(avm_pipeline, tmp_path)
    target = str(avm_pipeline.cfg.project.table.target.name)
    assert profile.columns[target] == Column("numerical", "target")
    assert all(isinstance(v, float) for v in profile.data[target])
    # the same run exported again draws the same sample
    from modelyard.stages import export

    again = export.run(
        avm_pipeline.cfg, run_dir=avm_pipeline.trained.run_dir, output=tmp_path / "b"
    )
    assert again.reference_profile().data == profile.data


def test_the_drift_feature_modules_import_neither_pandas_nor_torch() -> None:
    code = (
        "import sys, modelyard.projects.nilm.drift_features, "
        "modelyard.projects.tabular.drift_features; "
        "heavy = [m for m in ('pandas', 'torch', 'lightning') if m in sys.modules]; "
        "sys.exit(str(heavy) if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
