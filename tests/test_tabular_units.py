"""Tabular building blocks on tiny tables: splits, valuation metrics, the median baseline, schema
validation and the prepared-table files. Expected values are worked out by hand."""

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.tabular.feature_pipeline import FeaturePipeline
from modelyard.projects.tabular.feature_values import category_key
from modelyard.projects.tabular.metrics import (
    fit_group_medians,
    predict_group_medians,
    valuation_scores,
)
from modelyard.projects.tabular.schema import SplitSpec, TableSchema, parse_schema
from modelyard.projects.tabular.splitting import TableSplit, split_table
from modelyard.projects.tabular.table_io import (
    ALL_ROWS,
    feature_columns,
    group_keys,
    read_prepared,
    write_prepared,
)

# --------------------------------------------------------------------------- splits


def numbered(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(rows), "value": np.arange(rows) * 10.0})


def ids(frame: pd.DataFrame) -> list[int]:
    return [int(v) for v in frame["id"]]


def test_random_split_sizes_are_rounded_fractions() -> None:
    # 100 rows: test round(100 * 0.2) = 20, val round(80 * 0.1) = 8, train 72
    split = split_table(numbered(100), SplitSpec(test_fraction=0.2, val_fraction=0.1, seed=3))
    assert (len(split.train), len(split.val), len(split.test)) == (72, 8, 20)


def test_random_split_is_disjoint_and_covers_every_row() -> None:
    split = split_table(numbered(100), SplitSpec(seed=3))
    train, val, test = set(ids(split.train)), set(ids(split.val)), set(ids(split.test))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(100))
    # rows keep their values (no misaligned index)
    for part in (split.train, split.val, split.test):
        np.testing.assert_array_equal(part["value"], part["id"] * 10.0)
        assert list(part.index) == list(range(len(part)))


def test_random_split_is_deterministic_by_seed_and_shuffled() -> None:
    first = split_table(numbered(100), SplitSpec(seed=3))
    again = split_table(numbered(100), SplitSpec(seed=3))
    other = split_table(numbered(100), SplitSpec(seed=4))
    assert ids(first.test) == ids(again.test)
    assert ids(first.val) == ids(again.val)
    assert ids(first.train) == ids(again.train)
    assert set(ids(first.test)) != set(ids(other.test))
    # not simply the last rows of the file
    assert set(ids(first.test)) != set(range(80, 100))


def test_time_split_puts_the_newest_rows_in_test_then_val() -> None:
    rng = np.random.default_rng(0)
    days = pd.date_range("2021-01-01", periods=20, freq="D")
    shuffled = rng.permutation(20)
    frame = pd.DataFrame({"id": shuffled, "sold": days[shuffled]})
    spec = SplitSpec(method="time", time_column="sold", test_fraction=0.2, val_fraction=0.1, seed=0)

    split = split_table(frame, spec)

    # 20 rows: test round(4.0) = 4, val round(16 * 0.1) = 2, train 14; id == day number
    assert sorted(ids(split.test)) == [16, 17, 18, 19]
    assert sorted(ids(split.val)) == [14, 15]
    assert sorted(ids(split.train)) == list(range(14))
    assert split.train["sold"].max() < split.val["sold"].min()
    assert split.val["sold"].max() < split.test["sold"].min()


@pytest.mark.parametrize("rows", [0, 1, 3, 4])
def test_too_few_rows_are_a_data_error(rows: int) -> None:
    # 4 rows: test round(0.8) = 1, val round(0.3) = 0 -> no validation row
    with pytest.raises(DataError, match="too few"):
        split_table(numbered(rows), SplitSpec(test_fraction=0.2, val_fraction=0.1))


def test_time_split_on_a_missing_column_is_a_config_error() -> None:
    spec = SplitSpec(method="time", time_column="sold")
    with pytest.raises(ConfigError, match="'sold'"):
        split_table(numbered(50), spec)


# --------------------------------------------------------------------------- metrics


def test_valuation_scores_by_hand() -> None:
    truth = np.array([100.0, 200.0, 50.0, 1000.0])
    predicted = np.array([102.0, 184.0, 57.5, 700.0])
    # absolute errors 2, 16, 7.5, 300; relative 0.02, 0.08, 0.15, 0.30
    scores = valuation_scores(truth, predicted)
    assert scores["rows"] == 4
    assert scores["mae"] == pytest.approx(325.5 / 4)
    assert scores["mdape"] == pytest.approx((0.08 + 0.15) / 2)
    assert scores["within_5pct"] == pytest.approx(0.25)
    assert scores["within_10pct"] == pytest.approx(0.5)
    assert scores["within_20pct"] == pytest.approx(0.75)


def test_valuation_scores_ignore_rows_without_a_positive_truth() -> None:
    truth = np.array([0.0, 100.0, -10.0, 200.0])
    predicted = np.array([1e9, 110.0, 5.0, 150.0])
    # kept: (100, 110) rel 0.10, (200, 150) rel 0.25
    scores = valuation_scores(truth, predicted)
    assert scores["rows"] == 2
    assert scores["mae"] == pytest.approx(30.0)
    assert scores["mdape"] == pytest.approx(0.175)
    assert scores["within_20pct"] == pytest.approx(0.5)
    assert scores["within_5pct"] == 0.0


@pytest.mark.parametrize("truth", [[], [0.0, -1.0]])
def test_valuation_scores_without_rows_raise(truth: list[float]) -> None:
    with pytest.raises(ValueError, match="no rows"):
        valuation_scores(np.array(truth), np.ones(len(truth)))


def test_group_medians_by_hand() -> None:
    groups = ["a", "a", "a", "b", "b", "c"]
    target = np.array([1.0, 2.0, 10.0, 20.0, 30.0, 50.0])
    # global median of 1, 2, 10, 20, 30, 50 = (10 + 20) / 2 = 15
    medians = fit_group_medians(groups, target)
    assert medians == {"global": 15.0, "groups": {"a": 2.0, "b": 25.0, "c": 50.0}}

    predicted = predict_group_medians(medians, ["c", "a", "unknown", "b"])
    np.testing.assert_array_equal(predicted, [50.0, 2.0, 15.0, 25.0])


def test_group_medians_drop_groups_below_min_rows() -> None:
    groups = ["a", "a", "a", "b", "b", "c"]
    target = np.array([1.0, 2.0, 10.0, 20.0, 30.0, 50.0])
    medians = fit_group_medians(groups, target, min_rows=2)
    assert medians["groups"] == {"a": 2.0, "b": 25.0}
    # c now falls back to the global median
    np.testing.assert_array_equal(predict_group_medians(medians, ["c"]), [15.0])
    assert fit_group_medians(groups, target, min_rows=4)["groups"] == {}


# --------------------------------------------------------------------------- schema


def raw_schema() -> dict[str, Any]:
    return {
        "read": {"file": "sales.csv"},
        "derive": [{"name": "zip_code", "op": "regex", "source": "city", "pattern": r"(\d{4})"}],
        "features": {
            "numeric": [
                {"name": "area_m2", "min": 15, "max": 300},
                {"name": "floor", "required": False},
            ],
            "categorical": [{"name": "zip_code"}, {"name": "side", "required": False}],
            "date": [{"name": "sale_date"}],
        },
        "target": {"name": "price_per_m2"},
        "total": {"name": "total_price", "multiply_by": "area_m2"},
        "baseline_group": "zip_code",
    }


def schema(**changes: Any) -> TableSchema:
    raw = raw_schema()
    raw.update(changes)
    return parse_schema(raw)


def test_the_valid_schema_parses() -> None:
    parsed = schema()
    assert parsed.features.names() == ["area_m2", "floor", "zip_code", "side", "sale_date"]
    assert parsed.total is not None and parsed.total.multiply_by == "area_m2"


def _features(**kinds: list[dict[str, Any]]) -> dict[str, Any]:
    features = dict(raw_schema()["features"])
    features.update(kinds)
    return features


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"read": {"file": "s.csv", "header": False}}, ["read", "read.columns is required"]),
        (
            {"derive": [{"name": "zip_code", "op": "regex", "source": "city"}]},
            ["derive.0", "'zip_code'", "needs a pattern"],
        ),
        (
            {"features": _features(categorical=[{"name": "zip_code"}, {"name": "area_m2"}])},
            ["features listed twice", "'area_m2'"],
        ),
        (
            {"features": _features(numeric=[{"name": "area_m2"}, {"name": "price_per_m2"}])},
            ["target 'price_per_m2' is also a feature"],
        ),
        (
            {"total": {"multiply_by": "rooms"}},
            ["total.multiply_by 'rooms'", "required numeric feature"],
        ),
        (
            {"total": {"multiply_by": "floor"}},  # numeric, but optional
            ["total.multiply_by 'floor'", "required numeric feature"],
        ),
        (
            {"total": {"multiply_by": "zip_code"}},  # required, but categorical
            ["total.multiply_by 'zip_code'"],
        ),
        ({"split": {"method": "time"}}, ["split", "time_column"]),
        ({"colour": "red"}, ["colour", "Extra inputs"]),
    ],
)
def test_schema_errors_name_the_field(changes: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        schema(**changes)
    message = str(caught.value)
    assert message.startswith("project.table is invalid:")
    for fragment in fragments:
        assert fragment in message


# --------------------------------------------------------------------------- prepared tables


def table(zips: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "area_m2": [50.0, 72.5, np.nan],
            "floor": [0.0, np.nan, 3.0],
            "zip_code": zips,
            "side": ["th", None, "tv"],
            "sale_date": pd.to_datetime(["2021-07-01", "2021-12-31", None]),
            "price_per_m2": [30000.0, 41000.5, 25000.0],
        }
    )


def round_trip(tmp_path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    parsed = schema()
    written = write_prepared(TableSplit(frame, frame.head(1), frame.tail(1)), tmp_path, parsed)
    assert written == {p: str(tmp_path / f"{p}.csv") for p in ("train", "val", "test")}
    return read_prepared(tmp_path, "train", parsed)


def test_prepared_round_trip_keeps_categories_as_text_and_parses_dates(tmp_path: Path) -> None:
    back = round_trip(tmp_path, table(["0800", "2100", None]))

    assert back["zip_code"].tolist()[:2] == ["0800", "2100"]  # leading zero kept, still text
    assert pd.isna(back["zip_code"][2])
    assert back["sale_date"].dtype == "datetime64[ns]"
    assert back["sale_date"][1] == pd.Timestamp("2021-12-31")
    assert back["price_per_m2"].tolist() == [30000.0, 41000.5, 25000.0]
    assert (tmp_path / "val.csv").read_text().count("\n") == 2  # header + 1 row


def test_numeric_categories_round_trip_to_the_keys_serving_uses(tmp_path: Path) -> None:
    """A zip code column read as numbers (floats) must not train as "2100.0"."""
    back = round_trip(tmp_path, table([2100.0, 8000.0, np.nan]))

    assert back["zip_code"].tolist()[:2] == ["2100", "8000"]
    pipeline = FeaturePipeline.fit(schema().features, feature_columns(back, schema()))
    assert pipeline.categories("zip_code") == ["2100", "8000"]
    # what a request sending the integer 2100 is compared as
    assert category_key(2100) in pipeline.categories("zip_code")
    assert group_keys(back, schema()) == ["2100", "8000", ALL_ROWS]


def test_prepared_text_is_spreadsheet_safe_on_disk_and_exact_when_read_back(
    tmp_path: Path,
) -> None:
    frame = table(["0800", "2100", None])
    frame["side"] = ['=HYPERLINK("http://evil","x")', "'=1", "@me"]
    frame["note"] = ["-", "-3.5", "plain"]

    back = round_trip(tmp_path, frame)

    on_disk = pd.read_csv(tmp_path / "train.csv", dtype=str, keep_default_na=False)
    assert on_disk["side"].tolist() == ['\'=HYPERLINK("http://evil","x")', "''=1", "'@me"]
    assert on_disk["note"].tolist() == ["'-", "-3.5", "plain"]
    assert back["side"].tolist() == frame["side"].tolist()
    assert back["note"].tolist() == ["-", "-3.5", "plain"]


def test_feature_columns_are_plain_python_values(tmp_path: Path) -> None:
    back = round_trip(tmp_path, table(["0800", "2100", None]))

    columns = feature_columns(back, schema())
    assert list(columns) == ["area_m2", "floor", "zip_code", "side", "sale_date"]
    assert columns["area_m2"] == [50.0, 72.5, None]
    assert columns["floor"] == [0.0, None, 3.0]
    assert columns["zip_code"] == ["0800", "2100", None]
    assert columns["side"] == ["th", None, "tv"]
    assert columns["sale_date"] == [date(2021, 7, 1), date(2021, 12, 31), None]
    assert all(type(v) is float for v in columns["area_m2"] if v is not None)


def test_feature_columns_name_a_missing_column() -> None:
    frame = table(["2100", "2100", "8000"]).drop(columns=["side"])
    with pytest.raises(DataError, match="'side'"):
        feature_columns(frame, schema())


def test_group_keys_with_and_without_a_baseline_group() -> None:
    frame = table(["0800", 2100.0, None])
    assert group_keys(frame, schema()) == ["0800", "2100", ALL_ROWS]
    assert group_keys(frame, schema(baseline_group=None)) == [ALL_ROWS] * 3


def test_reading_a_missing_part_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="prepare"):
        read_prepared(tmp_path, "train", schema())
