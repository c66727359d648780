"""End to end on the real Boliga sales: fetch -> prepare -> train(quick) -> evaluate -> export ->
real server on 127.0.0.1 -> HTTP valuation of a real test sale."""

import csv
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from modelyard.core.bundle import load_bundle
from modelyard.projects.tabular.contract import TabularContract
from modelyard.serving.server_process import running_server
from modelyard.stages import evaluate
from trained_pipelines import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FILE = "boliga_sales_2021.csv"
SCORES = ("rows", "mae", "mdape", "within_5pct", "within_10pct", "within_20pct")


def part(pipeline: Pipeline, name: str) -> pd.DataFrame:
    """A prepared part as pandas reads it by itself (zip codes as text)."""
    return pd.read_csv(pipeline.prepared_dir / f"{name}.csv", dtype={"zip_code": str})


@pytest.fixture
def pipeline(avm_pipeline: Pipeline) -> Pipeline:
    """The session's quick AVM run (see ``trained_pipelines.py``)."""
    return avm_pipeline


def test_prepare_accounts_for_every_line_of_the_source(
    pipeline: Pipeline, tables_source: Path
) -> None:
    lines = (tables_source / FILE).read_text(encoding="utf-8").splitlines()
    # a record has 7 fields; a line with more is two records glued together
    glued = sum(1 for line in lines if line.count(",") != 6)
    summary = json.loads((Path(pipeline.cfg.paths.prepared) / "prepare.json").read_text())
    assert summary == json.loads(json.dumps(pipeline.prepared, default=str))

    reading = summary["reading"][FILE]
    assert summary["rows_read"] + reading["refused"] == reading["read"] == len(lines)
    assert reading["refused"] == reading["refused_by_reason"]["too_many_fields"]["count"] == glued
    assert summary["rows_read"] > 30_000
    removed = sum(f["rows_removed"] for f in summary["filters"])
    assert summary["rows_kept"] == summary["rows_read"] - removed
    assert 0.05 <= summary["rows_kept"] / summary["rows_read"] <= 0.5  # apartments only


def test_outliers_are_removed_from_training_rows_only(pipeline: Pipeline) -> None:
    summary = pipeline.prepared
    kept = summary["rows_kept"]
    n_test = round(kept * 0.2)
    n_val = round((kept - n_test) * 0.1)
    (outliers,) = summary["outliers_removed_from_train"]
    assert outliers["rows_before"] == kept - n_test - n_val
    assert 0 < outliers["rows_removed"] < 0.1 * outliers["rows_before"]
    assert summary["rows"] == {
        "train": kept - n_test - n_val - outliers["rows_removed"],
        "val": n_val,
        "test": n_test,
    }

    (bounds,) = summary["outlier_bounds"]

    def outside(frame: pd.DataFrame) -> int:
        low = frame["zip_code"].map(lambda z: bounds["groups"].get(z, bounds["global"])[0])
        high = frame["zip_code"].map(lambda z: bounds["groups"].get(z, bounds["global"])[1])
        value = frame["price_per_m2"]
        return int(((value < low) | (value > high)).sum())

    train, val, test = (part(pipeline, name) for name in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == tuple(summary["rows"].values())
    assert outside(train) == 0
    assert outside(pd.concat([val, test])) > 0  # evaluation rows are never cleaned
    for frame in (train, val, test):
        assert frame["floor"].notna().all()
        assert frame["area_m2"].between(15, 300).all()
        assert frame["zip_code"].str.fullmatch(r"\d{4}").all()


def test_evaluation_scores_model_and_baseline(pipeline: Pipeline) -> None:
    run_dir = pipeline.trained.run_dir
    on_disk = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert on_disk == pipeline.metrics
    test = part(pipeline, "test")
    for who in ("model", "baseline"):
        assert set(SCORES) <= set(on_disk[who])
        assert on_disk[who]["rows"] == len(test)
        assert on_disk[who]["mae"] > 0
        assert 0 < on_disk[who]["mdape"] < 1
        bands = [on_disk[who][f"within_{b}pct"] for b in (5, 10, 20)]
        assert 0 < bands[0] <= bands[1] <= bands[2] <= 1

    # the baseline, recomputed here: median training price per m2 of the zip code
    train = part(pipeline, "train")
    medians = train.groupby("zip_code")["price_per_m2"].median()
    guess = test["zip_code"].map(medians).fillna(train["price_per_m2"].median())
    relative = (guess - test["price_per_m2"]).abs() / test["price_per_m2"]
    assert on_disk["baseline"]["mdape"] == pytest.approx(float(relative.median()), abs=1e-9)
    assert on_disk["baseline"]["mae"] == pytest.approx(
        float((guess - test["price_per_m2"]).abs().mean()), rel=1e-9
    )

    (plot,) = on_disk["plots"]
    assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bundle_parity_and_scores(pipeline: Pipeline, tmp_path: Path) -> None:
    bundle = load_bundle(pipeline.bundle.path)  # verifies sha256 again
    manifest = bundle.manifest
    assert manifest.project == "avm"
    assert manifest.task == "tabular"
    assert manifest.parity is not None
    assert manifest.parity.max_abs_diff <= 1e-4
    assert manifest.metrics["model"]["mdape"] == pipeline.metrics["model"]["mdape"]
    (example,) = manifest.examples
    found = bundle.example("test-rows.csv")
    assert found is not None and example.media_type == "text/csv"
    header, *rows = found[1].decode().splitlines()
    fields = TabularContract.from_manifest(manifest).schema.features.names()
    assert header.split(",") == fields
    assert len(rows) == 5

    from_bundle, _ = evaluate.run(pipeline.cfg, model=bundle.path, output=tmp_path / "bundle.json")
    assert from_bundle["evaluated"]["kind"] == "bundle"
    assert from_bundle["model"]["mdape"] == pytest.approx(
        pipeline.metrics["model"]["mdape"], abs=1e-4
    )
    assert from_bundle["baseline"] == pipeline.metrics["baseline"]


def typical_test_row(pipeline: Pipeline) -> tuple[dict[str, Any], float]:
    """The first test sale within 25 % of its zip code's median training price per m2, as the
    request fields (numbers as JSON numbers, the rest as text from the prepared CSV) and its
    true price per m2."""
    train = part(pipeline, "train")
    medians = train.groupby("zip_code")["price_per_m2"].median().to_dict()
    schema = pipeline.bundle.manifest.preprocessing["schema"]["features"]
    numeric = {f["name"] for f in schema["numeric"]}
    features = [f["name"] for kind in ("numeric", "categorical", "date") for f in schema[kind]]
    path = Path(pipeline.cfg.paths.prepared) / "test.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            truth = float(record["price_per_m2"])
            median = medians.get(record["zip_code"])
            if median is not None and abs(truth / median - 1) <= 0.25:
                fields: dict[str, Any] = {
                    k: (float(record[k]) if k in numeric else record[k]) if record[k] else None
                    for k in features
                }
                return fields, truth
    raise AssertionError("no typical test sale")


def test_real_server_values_a_real_test_sale(pipeline: Pipeline) -> None:
    fields, truth = typical_test_row(pipeline)
    area = float(fields["area_m2"])
    with running_server(pipeline.bundle.path) as url:
        info = httpx.get(f"{url}/info", timeout=10).json()
        response = httpx.post(f"{url}/predict", json=fields, timeout=30)
        too_small = httpx.post(f"{url}/predict", json={**fields, "area_m2": 5}, timeout=30)

    assert info["version"] == pipeline.bundle.manifest.version
    assert response.status_code == 200, response.text
    (valuation,) = response.json()["predictions"]
    assert truth / 3 <= valuation["price_per_m2"] <= truth * 3
    assert abs(valuation["total_price"] - round(valuation["price_per_m2"] * area)) <= 1
    assert not [w for w in valuation["warnings"] if w.startswith("zip_code")]
    assert too_small.status_code == 422
    assert np.isfinite(valuation["price_per_m2"])
