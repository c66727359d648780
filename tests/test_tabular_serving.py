"""The tabular API on a real bundle trained (quickly) on a synthetic Boliga-format table.

The table is written in the real source layout (no header, Danish numbers, dd-mm-yyyy dates,
floors in the address), so the bundle comes out of the same fetch -> prepare -> train -> export
stages as the real project, with the avm configuration pointed at a temporary directory.
"""

import csv
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from omegaconf import DictConfig

from modelyard.core.bundle import Bundle
from modelyard.projects.tabular.feature_pipeline import FeaturePipeline
from modelyard.projects.tabular.schema import TableSchema
from modelyard.projects.tabular.table_io import feature_columns, read_prepared
from modelyard.projects.tabular.target_scaling import decode_target
from modelyard.serving.app import create_app
from modelyard.serving.runtime import OnnxModel
from tabular_fixtures import VALID_ROW, build_avm_bundle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FIELDS = ["area_m2", "construction_year", "floor", "zip_code", "side", "sale_date"]
JSON = "application/json"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[DictConfig, Bundle]:
    """fetch -> prepare -> train (quick) -> export with the avm config on the synthetic table."""
    return build_avm_bundle(tmp_path_factory, rows=400)


@pytest.fixture(scope="module")
def bundle(built: tuple[DictConfig, Bundle]) -> Bundle:
    return built[1]


@pytest.fixture(scope="module")
def app(bundle: Bundle) -> FastAPI:
    return create_app(bundle)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def row(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(VALID_ROW)
    values.update(changes)
    return {k: v for k, v in values.items() if v is not ...}


def predict(client: TestClient, payload: Any) -> list[dict[str, Any]]:
    response = client.post("/predict", json=payload)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]  # type: ignore[no-any-return]


def feature_names(bundle: Bundle) -> list[str]:
    """The features the bundle was trained on, in schema order, read from its manifest."""
    features = bundle.manifest.preprocessing["schema"]["features"]
    return [f["name"] for kind in ("numeric", "categorical", "date") for f in features[kind]]


def error_locations(response: Any) -> list[list[Any]]:
    return [error["loc"] for error in response.json()["detail"]]


# --- happy path ------------------------------------------------------------------------------


def test_one_row_gets_a_price_per_m2_and_a_total(client: TestClient, bundle: Bundle) -> None:
    response = client.post("/predict", json=row())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "avm-mlp"
    assert body["version"] == bundle.manifest.version
    (valuation,) = body["predictions"]
    assert set(valuation) == {"price_per_m2", "total_price", "warnings"}
    assert valuation["price_per_m2"] > 0 and math.isfinite(valuation["price_per_m2"])
    assert abs(valuation["total_price"] - round(valuation["price_per_m2"] * 82.0)) <= 1
    assert valuation["warnings"] == []


def test_a_list_of_rows_answers_in_order_like_single_rows(client: TestClient) -> None:
    rows = [
        row(),
        row(zip_code="9000", area_m2=40.0, floor=0),
        row(zip_code="5000", area_m2=140.5, side=None, sale_date="2021-07-02"),
        row(zip_code=8000, area_m2=65.0, construction_year=2015),
    ]
    together = predict(client, rows)
    alone = [predict(client, r)[0] for r in rows]
    assert together == alone
    assert len({p["price_per_m2"] for p in together}) == len(rows)  # the input matters


def test_predicted_prices_are_exported_in_the_target_unit(client: TestClient) -> None:
    """One histogram per unit: the avm target's DKK/m2 names it (not a mixed value metric)."""
    before = client.get("/metrics").text
    predict(client, [row(), row()])
    after = client.get("/metrics").text
    name = 'modelyard_prediction_dkk_per_m2_count{output="price_per_m2"}'

    def count(text: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(name)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    assert count(after) - count(before) == 2
    assert "modelyard_prediction_value" not in after


def test_optional_fields_may_be_omitted_or_null(client: TestClient) -> None:
    omitted = predict(client, row(construction_year=..., floor=..., side=...))
    nulls = predict(client, row(construction_year=None, floor=None, side=None))
    given = predict(client, row())
    assert omitted == nulls
    assert omitted[0]["warnings"] == []
    assert omitted[0]["price_per_m2"] != given[0]["price_per_m2"]


def test_integer_and_text_zip_codes_are_the_same_category(client: TestClient) -> None:
    assert predict(client, row(zip_code=2100)) == predict(client, row(zip_code="2100"))


def test_a_zip_code_with_a_leading_zero_is_known(client: TestClient) -> None:
    (valuation,) = predict(client, row(zip_code="0800"))
    assert valuation["warnings"] == []


def test_an_unseen_zip_code_is_valued_as_other_with_a_warning(
    client: TestClient, bundle: Bundle
) -> None:
    (first,) = predict(client, row(zip_code="9999"))
    assert len(first["warnings"]) == 1
    assert "zip_code" in first["warnings"][0] and "'9999'" in first["warnings"][0]
    assert first["price_per_m2"] != predict(client, row())[0]["price_per_m2"]
    # What "valued as unseen" means for each of avm's zip code encodings: the "other" one-hot
    # column, the training prior as target code, and the code's own number.
    pipeline = FeaturePipeline.from_json(bundle.manifest.preprocessing["features"])
    names = pipeline.output_names
    values = row(zip_code="9999")
    kinds = ("numeric", "categorical", "date")
    inputs = [spec["name"] for kind in kinds for spec in pipeline.params[kind]]
    x = pipeline.transform({name: [values.get(name)] for name in inputs})[0]
    onehot = [i for i, name in enumerate(names) if name.startswith("zip_code=")]
    assert [names[i] for i in onehot if x[i] == 1] == ["zip_code=__other__"]
    spec = next(s for s in pipeline.params["categorical"] if s["name"] == "zip_code")
    code = x[names.index("zip_code__target")] * spec["target"]["std"] + spec["target"]["mean"]
    assert code == pytest.approx(spec["target"]["prior"], rel=1e-5)
    number = x[names.index("zip_code__number")] * spec["number"]["std"] + spec["number"]["mean"]
    assert number == pytest.approx(9999, rel=1e-5)


def test_served_prices_equal_the_evaluation_path_on_prepared_rows(
    client: TestClient, built: tuple[DictConfig, Bundle]
) -> None:
    """Rows sent as JSON (from the prepared CSV's text; numbers as JSON numbers, as the schema
    declares them) are valued exactly like evaluation values the same rows read with pandas: no
    skew between training-side and serving-side inputs."""
    cfg, bundle = built
    pre = bundle.manifest.preprocessing
    schema = TableSchema.model_validate(pre["schema"])
    prepared = Path(cfg.paths.prepared)
    frame = read_prepared(prepared, "test", schema).head(25)
    scores = OnnxModel(bundle.model_path).run(
        FeaturePipeline.from_json(pre["features"]).transform(feature_columns(frame, schema))
    )
    expected = decode_target(pre["target"], scores.reshape(-1))

    with (prepared / "test.csv").open(newline="") as handle:
        texts = list(csv.DictReader(handle))[:25]
    names = feature_names(bundle)
    numeric = {f.name for f in schema.features.numeric}
    rows = [
        {
            k: (None if v == "" else float(v) if k in numeric else v)
            for k, v in t.items()
            if k in names
        }
        for t in texts
    ]
    served = predict(client, rows)

    assert len(served) == len(frame) == 25
    np.testing.assert_allclose([p["price_per_m2"] for p in served], expected, atol=0.0051)
    # every zip code of the table was seen in training, "0800" included, with its zero
    assert "0800" in {r["zip_code"] for r in rows}
    assert not [w for p in served for w in p["warnings"] if w.startswith("zip_code")]


def test_range_limits_are_inclusive(client: TestClient) -> None:
    for area in (15, 300):
        (valuation,) = predict(client, row(area_m2=area))
        assert abs(valuation["total_price"] - round(valuation["price_per_m2"] * area)) <= 1


# --- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("area", [5, 14.99, 300.5, 1000])
def test_area_out_of_range_is_a_422_naming_the_field(client: TestClient, area: float) -> None:
    response = client.post("/predict", json=row(area_m2=area))
    assert response.status_code == 422
    assert any("area_m2" in loc for loc in error_locations(response))


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (row(area_m2=...), "area_m2"),
        (row(zip_code=...), "zip_code"),
        (row(sale_date=...), "sale_date"),
        (row(area_m2="big"), "area_m2"),
        (row(floor="high"), "floor"),
        (row(zip_code=[2100]), "zip_code"),
        (row(zip_code=None), "zip_code"),
        (row(sale_date="2021-02-30"), "sale_date"),
        (row(sale_date="yesterday"), "sale_date"),
        (row(rooms=3), "rooms"),
        ([row(), row(area_m2=1000)], "area_m2"),
    ],
)
def test_bad_fields_are_a_422_naming_the_field(
    client: TestClient, payload: Any, field: str
) -> None:
    response = client.post("/predict", json=payload)
    assert response.status_code == 422, response.text
    assert any(field in loc for loc in error_locations(response))


def test_an_empty_list_is_a_422(client: TestClient) -> None:
    response = client.post("/predict", json=[])
    assert response.status_code == 422
    assert "between 1 and 1000 rows, got 0" in response.json()["detail"]


def test_more_than_max_rows_is_a_422(bundle: Bundle) -> None:
    small = TestClient(create_app(bundle, {"max_rows": 3}), raise_server_exceptions=False)
    assert small.post("/predict", json=[row()] * 3).status_code == 200
    response = small.post("/predict", json=[row()] * 4)
    assert response.status_code == 422
    assert "between 1 and 3 rows, got 4" in response.json()["detail"]
    assert small.get("/info").json()["details"]["max_rows"] == 3


def raw(client: TestClient, body: str | bytes, content_type: str | None = JSON) -> Any:
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/predict", content=body, headers=headers)


def test_nan_and_infinity_are_a_422(client: TestClient) -> None:
    for token in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps(row()).replace('"floor": 2', f'"floor": {token}')
        assert token in body
        response = raw(client, body)
        assert response.status_code == 422, (token, response.text)
        assert any("floor" in loc for loc in error_locations(response))


def test_a_non_json_content_type_is_a_415(client: TestClient) -> None:
    assert raw(client, json.dumps(row()), "text/plain").status_code == 415
    assert raw(client, json.dumps(row()), None).status_code == 415
    assert raw(client, json.dumps(row()), "application/json; charset=utf-8").status_code == 200


_OK = json.dumps(row())
MALFORMED: list[str | bytes] = [
    "",
    "{",
    "null",
    "42",
    '"a row"',
    "[null]",
    "[1, 2]",
    f"[{_OK}, 7]",
    "{}",
    _OK.replace('"area_m2": 82.0', '"area_m2": {}'),
    _OK.replace('"area_m2": 82.0', '"area_m2": 1e999'),
    _OK.replace('"area_m2": 82.0', f'"area_m2": 1{"0" * 400}'),
    _OK.replace('"area_m2": 82.0', '"area_m2": true'),
    _OK.replace('"zip_code": "2100"', '"zip_code": {"a": 1}'),
    _OK.replace('"zip_code": "2100"', '"zip_code": 2100.5'),
    _OK.replace('"zip_code": "2100"', f'"zip_code": 1{"0" * 5000}'),
    _OK.replace('"sale_date": "2021-10-15"', '"sale_date": 1e30'),
    _OK.replace('"sale_date": "2021-10-15"', '"sale_date": "0000-00-00"'),
    _OK.replace('"sale_date": "2021-10-15"', '"sale_date": [2021, 10, 15]'),
    _OK.replace('"side": "th"', '"side": ["th"]'),
    _OK.replace('"floor": 2', '"floor": "NaN"'),
    b'{"area_m2": \xff\xfe}',
    "[" * 50_000 + "]" * 50_000,
    json.dumps([json.loads(_OK)] * 1001),
]


def test_malformed_bodies_are_never_a_500(client: TestClient) -> None:
    statuses = []
    for body in MALFORMED:
        response = raw(client, body)
        statuses.append(response.status_code)
        assert 400 <= response.status_code < 500, (body[:80], response.status_code, response.text)
        assert response.json()["detail"]
    assert statuses.count(422) >= len(MALFORMED) - 3  # almost all are validation errors
    assert client.get("/health").status_code == 200


# --- documentation ---------------------------------------------------------------------------


def test_openapi_documents_the_row_fields_with_ranges_and_an_example(
    client: TestClient, bundle: Bundle
) -> None:
    openapi = client.get("/openapi.json").json()
    operation = openapi["paths"]["/predict"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    # one row object or a list of the same rows (inlined: the route reads its body itself)
    (row_schema,) = [option for option in body["anyOf"] if option["type"] == "object"]
    (rows_schema,) = [option for option in body["anyOf"] if option["type"] == "array"]
    assert rows_schema["items"] == row_schema
    assert (rows_schema["minItems"], rows_schema["maxItems"]) == (1, 1000)

    properties = row_schema["properties"]
    assert set(properties) == set(feature_names(bundle)) >= set(FIELDS)
    assert {"area_m2", "zip_code", "sale_date"} <= set(row_schema["required"])
    assert not {"construction_year", "floor", "side"} & set(row_schema["required"])
    assert row_schema["additionalProperties"] is False
    area = properties["area_m2"]
    assert (area["minimum"], area["maximum"]) == (15, 300)
    assert area["description"] == "Living area in m2"
    floor_options = properties["floor"]["anyOf"]
    assert {"type": "null"} in floor_options
    assert any(o.get("minimum") == -1 and o.get("maximum") == 40 for o in floor_options)
    (example,) = row_schema["examples"]
    assert set(example) == set(properties)
    assert {"415", "422"} <= set(operation["responses"])
    # the documented example is itself a valid request
    assert predict(client, example)[0]["price_per_m2"] > 0


def test_info_reports_target_and_features(client: TestClient, bundle: Bundle) -> None:
    info = client.get("/info").json()
    assert info["project"] == "avm"
    assert info["task"] == "tabular"
    assert info["details"] == {
        "target": "price_per_m2",
        "unit": "DKK/m2",
        "features": feature_names(bundle),
        "max_rows": 1000,
        "example": bundle.manifest.preprocessing.get("example_row"),
    }
    assert set(FIELDS) <= set(info["details"]["features"])
    assert {"mae", "mdape", "within_10pct"} <= set(info["metrics"].get("model", {})) or (
        info["metrics"] == {}  # the bundle was exported without an evaluation
    )


# --- offline prediction ----------------------------------------------------------------------


def modelyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for values in rows:
            writer.writerow({k: "" if v is None else v for k, v in values.items()})
    return path


def test_offline_predict_writes_the_inputs_plus_predictions(
    client: TestClient, bundle: Bundle, tmp_path: Path
) -> None:
    rows = [
        row(),
        row(zip_code="9999", area_m2=55.5, side=None, construction_year=None),
        row(zip_code="0800", floor=-1, sale_date="2021-12-01"),
    ]
    source = write_csv(tmp_path / "in.csv", rows)
    output = tmp_path / "out" / "out.csv"

    result = modelyard("predict", str(bundle.path), str(source), str(output))

    assert result.returncode == 0, result.stderr
    with output.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [*FIELDS, "price_per_m2", "total_price", "warnings"]
        written = list(reader)
    expected = predict(client, rows)
    assert len(written) == len(rows)
    for line, sent, answer in zip(written, rows, expected, strict=True):
        assert line["zip_code"] == sent["zip_code"]  # "0800" keeps its zero
        assert line["area_m2"] == str(sent["area_m2"])
        assert float(line["price_per_m2"]) == pytest.approx(answer["price_per_m2"], abs=0.01)
        assert float(line["total_price"]) == pytest.approx(answer["total_price"], abs=1)
        assert line["warnings"] == "; ".join(answer["warnings"])
    assert "'9999'" in written[1]["warnings"]


def test_offline_predict_neutralises_formulas_in_copied_text(
    bundle: Bundle, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    evil_street = '=HYPERLINK("http://evil","x")'
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*row(), "street", "@note", "delta"])
        writer.writerow([*row().values(), evil_street, "+cmd|' /C calc'!A0", "-3.5"])
    output = tmp_path / "out.csv"

    result = modelyard("predict", str(bundle.path), str(source), str(output))

    assert result.returncode == 0, result.stderr
    with output.open(newline="") as handle:
        header, line = list(csv.reader(handle))
    assert header[-6:-3] == ["street", "'@note", "delta"]
    cells = dict(zip(header, line, strict=True))
    assert cells["street"] == "'" + evil_street
    assert cells["'@note"] == "'+cmd|' /C calc'!A0"
    assert cells["delta"] == "-3.5"  # a negative number stays a number
    assert float(cells["price_per_m2"]) > 0


def test_offline_predict_reports_a_bad_row_by_line(bundle: Bundle, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [row(), row(area_m2="big"), row()])
    output = tmp_path / "out.csv"

    result = modelyard("predict", str(bundle.path), str(source), str(output))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (message,) = result.stderr.strip().splitlines()
    assert f"{source}:3" in message
    assert "area_m2" in message
    assert not output.exists()


def test_offline_predict_reads_a_byte_order_mark_and_refuses_non_utf8(
    bundle: Bundle, tmp_path: Path
) -> None:
    text = write_csv(tmp_path / "plain.csv", [row()]).read_text(encoding="utf-8")
    with_bom = tmp_path / "bom.csv"
    with_bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(text.replace("th", "\u00e6").encode("latin-1"))

    good = modelyard("predict", str(bundle.path), str(with_bom), str(tmp_path / "a.csv"))
    bad = modelyard("predict", str(bundle.path), str(latin1), str(tmp_path / "b.csv"))

    assert good.returncode == 0, good.stderr
    with (tmp_path / "a.csv").open(newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle))[0] == "area_m2"
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "UTF-8" in bad.stderr
