"""Tabular feature preprocessing: each rule on tiny data, expected values worked out by hand."""

import json
import math
import subprocess
import sys
from datetime import date, datetime
from typing import Any

import numpy as np
import pytest

from modelyard.core.errors import BundleError, ConfigError, DataError
from modelyard.projects.tabular.feature_pipeline import FeaturePipeline
from modelyard.projects.tabular.schema import (
    CategoricalFeature,
    DateFeature,
    Features,
    NumericFeature,
    Target,
)
from modelyard.projects.tabular.target_scaling import decode_target, encode_target, fit_target


def numeric(name: str = "x", required: bool = True) -> Features:
    return Features(numeric=[NumericFeature(name=name, required=required)])


def categorical(name: str = "c", required: bool = True, max_categories: int = 200) -> Features:
    return Features(
        categorical=[
            CategoricalFeature(name=name, required=required, max_categories=max_categories)
        ]
    )


def dated(parts: list[Any], required: bool = True, name: str = "d") -> Features:
    return Features(date=[DateFeature(name=name, required=required, parts=parts)])


def mixed() -> Features:
    return Features(
        numeric=[NumericFeature(name="area_m2"), NumericFeature(name="floor", required=False)],
        categorical=[CategoricalFeature(name="zip_code", required=False, max_categories=2)],
        date=[DateFeature(name="sale_date", parts=["ordinal", "year", "month", "day_of_week"])],
    )


MIXED_ROWS: dict[str, list[Any]] = {
    "area_m2": [50.0, 70, "90", 65.5],
    "floor": [0, None, 3, float("nan")],
    "zip_code": [2100, "2100", "8000", None],
    "sale_date": [
        date(2020, 1, 1),
        "2021-06-15",
        np.datetime64("2022-03-01"),
        datetime(2023, 12, 31),
    ],
}


# --------------------------------------------------------------------------- numeric


def test_numeric_is_standardised_with_training_mean_and_std() -> None:
    pipeline = FeaturePipeline.fit(numeric(), {"x": [1.0, 3.0]})  # mean 2, population std 1
    out = pipeline.transform({"x": [1.0, 3.0, 2.5, 0]})
    assert out.dtype == np.float32
    assert out.shape == (4, 1)
    np.testing.assert_array_equal(out[:, 0], [-1.0, 1.0, 0.5, -2.0])
    assert pipeline.output_names == ["x"]


def test_numeric_missing_is_imputed_with_median_and_flagged_when_optional() -> None:
    # observed 1, 2, 6: median 2, mean 3, std sqrt((4 + 1 + 9) / 3)
    pipeline = FeaturePipeline.fit(numeric(required=False), {"x": [1, None, 2, 6]})
    std = math.sqrt(14 / 3)
    out = pipeline.transform({"x": [None, float("nan"), "", 6.0]})
    np.testing.assert_allclose(out[:, 0], [-1 / std, -1 / std, -1 / std, 3 / std], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], [1, 1, 1, 0])
    assert pipeline.output_names == ["x", "x__missing"]


def test_required_numeric_imputes_without_an_indicator_and_median_averages_the_middle() -> None:
    pipeline = FeaturePipeline.fit(numeric(), {"x": [1.0, 2.0, 4.0, 5.0]})  # median 3, mean 3
    assert pipeline.params["numeric"][0]["median"] == 3.0
    assert pipeline.transform({"x": [None]}).tolist() == [[0.0]]


def test_numeric_is_clipped_to_ten_standard_deviations() -> None:
    pipeline = FeaturePipeline.fit(numeric(), {"x": [1.0, 3.0]})
    out = pipeline.transform({"x": [1e9, -1e9, 12.0, 1e308]})
    np.testing.assert_array_equal(out[:, 0], [10.0, -10.0, 10.0, 10.0])


def test_constant_numeric_uses_the_std_floor() -> None:
    pipeline = FeaturePipeline.fit(numeric(), {"x": [5.0, 5.0]})
    assert pipeline.params["numeric"][0]["std"] == 1e-6
    out = pipeline.transform({"x": [5.0, 5.0000001]})[:, 0]
    np.testing.assert_allclose(out, [0.0, 0.1], rtol=1e-6)


def test_numeric_accepts_numpy_arrays_and_scalars() -> None:
    pipeline = FeaturePipeline.fit(numeric(), {"x": np.array([1, 3], dtype=np.int64)})
    out = pipeline.transform({"x": [np.float32(3.0), np.int16(1), True]})
    np.testing.assert_array_equal(out[:, 0], [1.0, -1.0, -1.0])


# --------------------------------------------------------------------------- categorical


def test_categorical_one_hot_keeps_the_most_frequent_and_sends_the_rest_to_other() -> None:
    rows = {"c": ["a", "b", "b", "c", "c", "c", "d"]}
    pipeline = FeaturePipeline.fit(categorical(max_categories=2), rows)
    assert pipeline.output_names == ["c=c", "c=b", "c=__other__"]
    out = pipeline.transform({"c": ["b", "c", "a", "never seen"]})
    assert out.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]]


def test_categorical_ties_are_broken_by_category_string() -> None:
    pipeline = FeaturePipeline.fit(categorical(max_categories=3), {"c": ["z", "m", "a", "q", "q"]})
    assert pipeline.params["categorical"][0]["categories"] == ["q", "a", "m"]
    again = FeaturePipeline.fit(categorical(max_categories=3), {"c": ["a", "q", "m", "q", "z"]})
    assert again.params == pipeline.params


def test_categorical_whole_numbers_are_the_same_category_as_their_text() -> None:
    pipeline = FeaturePipeline.fit(categorical(), {"c": [2100, "2100", 2100.0, np.int64(8000)]})
    assert pipeline.output_names == ["c=2100", "c=8000", "c=__other__"]
    out = pipeline.transform({"c": [2100.0, np.float32(8000), "8000", 2100.5, "2100.0"]})
    # "2100.0" is text, compared as written; 2100.5 is not whole and was never seen
    assert out.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]


def test_categorical_missing_has_its_own_column_when_optional() -> None:
    pipeline = FeaturePipeline.fit(categorical(required=False), {"c": ["a", None, "a"]})
    assert pipeline.output_names == ["c=a", "c=__other__", "c=__missing__"]
    out = pipeline.transform({"c": [None, float("nan"), "a", "b"]})
    assert out.tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 0]]


def test_required_categorical_missing_counts_as_other() -> None:
    pipeline = FeaturePipeline.fit(categorical(), {"c": ["a", "b"]})
    assert pipeline.transform({"c": [None]}).tolist() == [[0, 0, 1]]


# --------------------------------------------------------------------------- date


def test_date_ordinal_and_year_are_standardised() -> None:
    rows = {"d": [date(1970, 1, 1), date(1972, 1, 3)]}  # days 0 and 732; years 1970 and 1972
    pipeline = FeaturePipeline.fit(dated(["ordinal", "year"]), rows)
    spec = pipeline.params["date"][0]
    assert (spec["ordinal_mean"], spec["ordinal_std"]) == (366.0, 366.0)
    assert (spec["year_mean"], spec["year_std"]) == (1971.0, 1.0)
    out = pipeline.transform({"d": ["1970-01-01", "1971-01-02", "1972-01-03"]})
    np.testing.assert_array_equal(out, [[-1, -1], [0, 0], [1, 1]])
    assert pipeline.output_names == ["d__ordinal", "d__year"]


def test_date_cyclic_parts_match_hand_computed_sin_cos() -> None:
    pipeline = FeaturePipeline.fit(
        dated(["month", "day_of_year", "day_of_week"]), {"d": [date(2024, 1, 1)]}
    )
    # 2024-04-01: April (month index 3), day 31 + 29 + 31 + 1 = 92 of the year, a Monday
    out = pipeline.transform({"d": [date(2024, 4, 1), date(1970, 1, 1)]})
    doy = 2 * math.pi * 91 / 365.25
    thursday = 2 * math.pi * 3 / 7
    expected = [
        [1.0, 0.0, math.sin(doy), math.cos(doy), 0.0, 1.0],
        [0.0, 1.0, 0.0, 1.0, math.sin(thursday), math.cos(thursday)],
    ]
    np.testing.assert_allclose(out, expected, atol=1e-7)
    assert pipeline.output_names == [
        "d__month_sin",
        "d__month_cos",
        "d__day_of_year_sin",
        "d__day_of_year_cos",
        "d__day_of_week_sin",
        "d__day_of_week_cos",
    ]


def test_date_input_kinds_agree() -> None:
    pipeline = FeaturePipeline.fit(dated(["ordinal", "month"]), {"d": ["2020-01-01", "2021-01-01"]})
    kinds = [
        date(2020, 7, 4),
        datetime(2020, 7, 4, 23, 59),
        np.datetime64("2020-07-04T12:00"),
        " 2020-07-04 ",
        "2020-07-04T08:30:00",
    ]
    out = pipeline.transform({"d": kinds})
    assert all(np.array_equal(row, out[0]) for row in out)
    as_array = pipeline.transform({"d": np.array(["2020-07-04"], dtype="datetime64[D]")})
    np.testing.assert_array_equal(as_array[0], out[0])


def test_missing_date_is_imputed_with_median_day_and_flagged() -> None:
    rows = {"d": [date(1970, 1, 1), date(1970, 1, 3), None, date(1970, 1, 5)]}
    pipeline = FeaturePipeline.fit(dated(["ordinal", "day_of_week"], required=False), rows)
    assert pipeline.params["date"][0]["median_day"] == 2
    out = pipeline.transform({"d": [None, np.datetime64("NaT"), ""]})
    saturday = 2 * math.pi * 5 / 7  # 1970-01-03 was a Saturday
    np.testing.assert_allclose(out, [[0.0, math.sin(saturday), math.cos(saturday), 1.0]] * 3)
    assert pipeline.output_names[-1] == "d__missing"


def test_dates_before_1970_have_correct_calendar_parts() -> None:
    pipeline = FeaturePipeline.fit(dated(["month", "day_of_week"]), {"d": ["1969-12-31"]})
    out = pipeline.transform({"d": ["1969-12-31"]})  # December, a Wednesday (weekday 2)
    wednesday = 2 * math.pi * 2 / 7
    december = 2 * math.pi * 11 / 12
    expected = [[math.sin(december), math.cos(december), math.sin(wednesday), math.cos(wednesday)]]
    np.testing.assert_allclose(out, expected, atol=1e-7)


# --------------------------------------------------------------------------- layout and errors


def test_output_layout_is_numeric_then_categorical_then_date() -> None:
    pipeline = FeaturePipeline.fit(mixed(), MIXED_ROWS)
    assert pipeline.output_names == [
        "area_m2",
        "floor",
        "floor__missing",
        "zip_code=2100",
        "zip_code=8000",
        "zip_code=__other__",
        "zip_code=__missing__",
        "sale_date__ordinal",
        "sale_date__year",
        "sale_date__month_sin",
        "sale_date__month_cos",
        "sale_date__day_of_week_sin",
        "sale_date__day_of_week_cos",
    ]
    out = pipeline.transform(MIXED_ROWS)
    assert out.shape == (4, 13)
    np.testing.assert_array_equal(out[:, 2], [0, 1, 0, 1])
    np.testing.assert_array_equal(
        out[:, 3:7], [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    )


def test_one_row_equals_the_matching_row_of_a_batch() -> None:
    pipeline = FeaturePipeline.fit(mixed(), MIXED_ROWS)
    batch = pipeline.transform(MIXED_ROWS)
    for row in range(4):
        single = pipeline.transform({name: [values[row]] for name, values in MIXED_ROWS.items()})
        assert np.array_equal(single[0], batch[row])


def test_extra_columns_are_ignored() -> None:
    pipeline = FeaturePipeline.fit(numeric(), {"x": [1.0, 3.0], "price": [1, 2]})
    assert pipeline.transform({"x": [3.0], "other": ["a", "b"]}).tolist() == [[1.0]]


def test_absent_column_is_a_config_error_at_fit_and_a_data_error_at_transform() -> None:
    with pytest.raises(ConfigError, match="area_m2"):
        FeaturePipeline.fit(mixed(), {k: v for k, v in MIXED_ROWS.items() if k != "area_m2"})
    pipeline = FeaturePipeline.fit(mixed(), MIXED_ROWS)
    with pytest.raises(DataError, match="zip_code"):
        pipeline.transform({k: v for k, v in MIXED_ROWS.items() if k != "zip_code"})


def test_columns_of_different_lengths_are_a_data_error() -> None:
    features = Features(numeric=[NumericFeature(name="a"), NumericFeature(name="b")])
    with pytest.raises(DataError, match="different lengths"):
        FeaturePipeline.fit(features, {"a": [1, 2], "b": [1]})
    pipeline = FeaturePipeline.fit(features, {"a": [1, 2], "b": [1, 2]})
    with pytest.raises(DataError, match="different lengths"):
        pipeline.transform({"a": [1], "b": [1, 2]})


@pytest.mark.parametrize(
    ("features", "good", "values", "row"),
    [
        (numeric("area"), 1.0, [1.0, "abc"], 1),
        (numeric("area"), 1.0, [float("inf"), 1.0], 0),
        (numeric("area"), 1.0, [1.0, 2.0, object()], 2),
        (dated(["month"], name="sold"), "2020-01-01", ["2020-01-01", "2020-13-45"], 1),
        (dated(["month"], name="sold"), "2020-01-01", [20200101], 0),
    ],
)
def test_unreadable_values_name_the_feature_and_row(
    features: Features, good: Any, values: list[Any], row: int
) -> None:
    name = features.names()[0]
    with pytest.raises(DataError, match=rf"{name}.*row {row}"):
        FeaturePipeline.fit(features, {name: values})
    pipeline = FeaturePipeline.fit(features, {name: [good]})
    with pytest.raises(DataError, match=rf"{name}.*row {row}"):
        pipeline.transform({name: values})


def test_fitting_on_zero_rows_is_a_data_error() -> None:
    with pytest.raises(DataError, match="zero rows"):
        FeaturePipeline.fit(numeric(), {"x": []})


def test_transform_of_zero_rows_has_the_output_width() -> None:
    pipeline = FeaturePipeline.fit(mixed(), MIXED_ROWS)
    assert pipeline.transform({name: [] for name in MIXED_ROWS}).shape == (0, 13)


def test_pandas_columns_and_missing_markers_are_understood() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "x": pd.array([1, None, 3], dtype="Int64"),
            "c": pd.array(["a", None, "b"], dtype="string"),
            "d": pd.to_datetime(["2020-01-01", None, "2020-01-03"]),
        }
    )
    features = Features(
        numeric=[NumericFeature(name="x", required=False)],
        categorical=[CategoricalFeature(name="c", required=False)],
        date=[DateFeature(name="d", required=False, parts=["ordinal"])],
    )
    as_lists = {name: frame[name].tolist() for name in frame.columns}
    pipeline = FeaturePipeline.fit(features, as_lists)
    out = pipeline.transform(as_lists)
    assert out[1].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 1.0]
    from_arrays = pipeline.transform(
        {"x": [1, None, 3], "c": ["a", None, "b"], "d": frame["d"].to_numpy()}
    )
    np.testing.assert_array_equal(from_arrays, out)


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_gives_identical_output() -> None:
    pipeline = FeaturePipeline.fit(mixed(), MIXED_ROWS)
    text = json.dumps(pipeline.to_json())
    restored = FeaturePipeline.from_json(json.loads(text))
    assert restored.params == pipeline.params
    assert restored.output_names == pipeline.output_names
    assert np.array_equal(restored.transform(MIXED_ROWS), pipeline.transform(MIXED_ROWS))


def test_to_json_is_a_copy() -> None:
    pipeline = FeaturePipeline.fit(categorical(), {"c": ["a"]})
    document = pipeline.to_json()
    document["categorical"][0]["categories"].append("b")
    assert pipeline.output_names == ["c=a", "c=__other__"]


def _corrupt(path: list[Any], value: Any) -> dict[str, Any]:
    document = FeaturePipeline.fit(mixed(), MIXED_ROWS).to_json()
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["version"], 2),
        (["numeric"], _DELETE),
        (["numeric"], {"not": "a list"}),
        (["numeric", 0], "area_m2"),
        (["numeric", 0, "std"], 0.0),
        (["numeric", 0, "mean"], float("nan")),
        (["numeric", 0, "median"], "3"),
        (["numeric", 0, "median"], True),
        (["numeric", 1, "required"], "no"),
        (["numeric", 1, "name"], "area_m2"),
        (["categorical", 0, "categories"], ["2100", "2100"]),
        (["categorical", 0, "categories"], [2100]),
        (["date", 0, "parts"], ["hour"]),
        (["date", 0, "median_day"], 1.5),
        (["date", 0, "year_std"], -1.0),
        (["date", 0, "ordinal_mean"], _DELETE),
    ],
)
def test_malformed_json_is_a_bundle_error(path: list[Any], value: Any) -> None:
    with pytest.raises(BundleError):
        FeaturePipeline.from_json(_corrupt(path, value))


@pytest.mark.parametrize("document", [None, [], "params", {}])
def test_non_documents_are_a_bundle_error(document: Any) -> None:
    with pytest.raises(BundleError):
        FeaturePipeline.from_json(document)


# --------------------------------------------------------------------------- target


def test_target_round_trip_with_log() -> None:
    prices = np.array([math.e, math.e**3])  # log: 1 and 3 -> mean 2, std 1
    params = fit_target(Target(name="price", log=True), prices)
    assert params == pytest.approx({"log": True, "mean": 2.0, "std": 1.0})
    encoded = encode_target(params, prices)
    assert encoded.dtype == np.float32
    np.testing.assert_allclose(encoded, [-1.0, 1.0], atol=1e-6)
    decoded = decode_target(params, encoded)
    assert decoded.dtype == np.float64
    np.testing.assert_allclose(decoded, prices, rtol=1e-6)
    assert json.loads(json.dumps(params)) == params


def test_target_round_trip_without_log() -> None:
    values = np.array([10.0, 20.0, 30.0, 40.0])  # mean 25, std sqrt(125)
    params = fit_target(Target(name="y", log=False), values)
    assert params == {"log": False, "mean": 25.0, "std": math.sqrt(125.0)}
    np.testing.assert_allclose(decode_target(params, encode_target(params, values)), values)
    np.testing.assert_allclose(decode_target(params, np.zeros(2)), [25.0, 25.0])


def test_target_rejects_unusable_values() -> None:
    with pytest.raises(DataError, match="row 1"):
        fit_target(Target(name="price"), [100.0, 0.0])
    with pytest.raises(DataError, match="row 0"):
        fit_target(Target(name="y", log=False), [float("nan")])
    with pytest.raises(DataError, match="zero rows"):
        fit_target(Target(name="y"), [])
    with pytest.raises(BundleError):
        decode_target({"log": True, "mean": 1.0}, np.zeros(1))
    with pytest.raises(BundleError):
        encode_target({"log": "yes", "mean": 1.0, "std": 1.0}, np.ones(1))


# --------------------------------------------------------------------------- properties


def _random_number(rng: np.random.Generator) -> Any:
    kind = rng.integers(6)
    if kind == 0:
        return None
    if kind == 1:
        return float("nan")
    if kind == 2:
        return float(rng.choice([-1, 1]) * 10 ** rng.uniform(-320, 308))
    if kind == 3:
        return int(rng.integers(-(10**12), 10**12))
    if kind == 4:
        return str(rng.normal())
    return float(rng.normal(0, 1e3))


def test_random_numeric_inputs_never_give_nan_or_inf() -> None:
    rng = np.random.default_rng(20240601)
    features = Features(
        numeric=[NumericFeature(name="a"), NumericFeature(name="b", required=False)]
    )
    for _ in range(200):
        n = int(rng.integers(1, 12))
        train = {name: [_random_number(rng) for _ in range(n)] for name in ("a", "b")}
        pipeline = FeaturePipeline.fit(features, train)
        json.dumps(pipeline.to_json(), allow_nan=False)
        rows = {name: [_random_number(rng) for _ in range(5)] for name in ("a", "b")}
        out = pipeline.transform(rows)
        assert np.isfinite(out).all()
        assert np.abs(out).max() <= 10.0


def test_importing_the_serving_side_modules_does_not_import_pandas() -> None:
    code = (
        "import sys, modelyard.projects.tabular.feature_pipeline, "
        "modelyard.projects.tabular.target_scaling; "
        "sys.exit(1 if 'pandas' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
