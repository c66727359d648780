"""Reading, deriving, filtering and outlier handling for tabular projects, on real files."""

import json
import math
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import pytest

from conftest import shared_datasets_root
from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.tabular.derived.columns import DERIVATION_OPS, derive_columns
from modelyard.projects.tabular.derived.danish_address import danish_floor, danish_side
from modelyard.projects.tabular.derived.parsers import PARSERS
from modelyard.projects.tabular.outliers import drop_outliers, fit_outlier_bounds
from modelyard.projects.tabular.reading import read_table
from modelyard.projects.tabular.row_filters import apply_filters
from modelyard.projects.tabular.schema import Derivation, OutlierRule, ReadSpec, RowFilter

REAL_TABLES = shared_datasets_root() / "tables"
BOLIGA_COLUMNS = [
    "address",
    "zip_city",
    "price_dkk",
    "sale_date",
    "area_m2",
    "price_per_m2",
    "construction_year",
]
BOLIGA_LINES = (
    "Vængevej 6,5771 Stenstrup,750.000,06-01-2022,89 ,8.427,1961\n"
    "Dommervænget 12C st. th,4000 Roskilde,2.515.000,06-01-2022,87 ,28.908,1968\n"
    "Parkvej 14 1. tv,9000 Aalborg,1.340.000,31-08-2021,81 ,16.543,1939\n"
)


def danish_spec(**changes: object) -> ReadSpec:
    """The boliga layout: no header, Danish numbers, dd-mm-yyyy dates."""
    fields: dict[str, object] = {
        "file": "sales.csv",
        "header": False,
        "columns": BOLIGA_COLUMNS,
        "thousands": ".",
        "decimal": ",",
        "dates": {"sale_date": "%d-%m-%Y"},
    }
    fields.update(changes)
    return ReadSpec.model_validate(fields)


def write(tmp_path: Path, text: str, name: str = "sales.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# read_table
# ---------------------------------------------------------------------------------------------


def test_reads_danish_numbers_text_and_dates_without_header(tmp_path: Path) -> None:
    frame, report = read_table(danish_spec(), write(tmp_path, BOLIGA_LINES))

    assert list(frame.columns) == BOLIGA_COLUMNS
    assert len(frame) == 3
    assert frame["price_dkk"].tolist() == [750000.0, 2515000.0, 1340000.0]
    assert frame["area_m2"].tolist() == [89.0, 87.0, 81.0]  # "89 " has a trailing space
    assert frame["price_per_m2"].tolist() == [8427.0, 28908.0, 16543.0]
    assert frame["construction_year"].tolist() == [1961.0, 1968.0, 1939.0]
    for column in ("price_dkk", "area_m2", "price_per_m2", "construction_year"):
        assert frame[column].dtype == np.float64
    assert frame["address"].tolist() == [
        "Vængevej 6",
        "Dommervænget 12C st. th",
        "Parkvej 14 1. tv",
    ]
    assert frame["zip_city"].dtype == object
    assert frame["sale_date"].dtype == "datetime64[ns]"
    assert frame["sale_date"].tolist() == [
        pd.Timestamp(2022, 1, 6),
        pd.Timestamp(2022, 1, 6),
        pd.Timestamp(2021, 8, 31),
    ]
    assert report.read == report.kept == 3 and report.refused == 0


def test_decimal_comma_and_strict_thousands_grouping(tmp_path: Path) -> None:
    spec = ReadSpec(file="t.csv", separator=";", thousands=".", decimal=",")
    x = ["16,5", "-2,75", "3", ",5", *(["7"] * 16)]
    y = ["1.340.000,25", "8.427", "12.345.678", "2.5", *(["7"] * 16)]  # 19 of 20 parse
    lines = [f"{a};{b}" for a, b in zip(x, y, strict=True)]
    path = write(tmp_path, "x;y\n" + "\n".join(lines) + "\n", "t.csv")

    frame, _ = read_table(spec, path)

    assert frame["x"].tolist()[:4] == [16.5, -2.75, 3.0, 0.5]
    assert frame["y"].tolist()[:3] == [1340000.25, 8427.0, 12345678.0]
    # "2.5" is not a valid Danish number (thousands group by three): NaN, not 25.
    assert math.isnan(frame["y"].iloc[3])


def test_english_separators(tmp_path: Path) -> None:
    spec = ReadSpec(file="t.csv", separator=";", thousands=",", decimal=".")
    frame, _ = read_table(spec, write(tmp_path, "v\n1,340,000.5\n.5\n1e3\n", "t.csv"))

    assert frame["v"].tolist() == [1340000.5, 0.5, 1000.0]


def test_header_names_the_columns_and_text_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, " city , price\n  Aalborg ,1.5\n,2\nOdense,\n", "t.csv")

    frame, _ = read_table(ReadSpec(file="t.csv"), path)

    assert list(frame.columns) == ["city", "price"]
    assert frame["city"].tolist() == ["Aalborg", None, "Odense"]
    assert frame["price"].iloc[:2].tolist() == [1.5, 2.0]
    assert math.isnan(frame["price"].iloc[2])


def test_columns_rename_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "By,Pris\nAalborg,10\n", "t.csv")

    frame, _ = read_table(ReadSpec(file="t.csv", columns=["city", "price"]), path)

    assert list(frame.columns) == ["city", "price"]
    assert frame.to_dict("records") == [{"city": "Aalborg", "price": 10.0}]


def test_quoted_field_keeps_its_separator(tmp_path: Path) -> None:
    path = write(tmp_path, 'address,area\n"Parkvej 14, 1. tv",81\n', "t.csv")

    frame, _ = read_table(ReadSpec(file="t.csv"), path)

    assert frame["address"].tolist() == ["Parkvej 14, 1. tv"]


def test_mostly_numeric_columns_become_float_others_stay_text(tmp_path: Path) -> None:
    # 19 of 20 (95 %) numbers -> float; 18 of 20 (90 %) -> text; all empty -> float NaN.
    mostly = [str(i) for i in range(19)] + ["n/a"]
    partly = [str(i) for i in range(18)] + ["12A", "12B"]
    lines = [f"{a},{b}," for a, b in zip(mostly, partly, strict=True)]
    path = write(tmp_path, "mostly,partly,empty\n" + "\n".join(lines) + "\n", "t.csv")

    frame, _ = read_table(ReadSpec(file="t.csv"), path)

    assert frame["mostly"].dtype == np.float64
    assert frame["mostly"].iloc[18] == 18.0
    assert math.isnan(frame["mostly"].iloc[19])
    assert frame["partly"].dtype == object
    assert frame["partly"].tolist()[-3:] == ["17", "12A", "12B"]
    assert frame["empty"].dtype == np.float64
    assert frame["empty"].isna().all()


def test_dates_that_do_not_match_the_format_become_nat(tmp_path: Path) -> None:
    path = write(tmp_path, "day,v\n06-01-2022,1\n31-02-2021,2\n2021-07-01,3\n,4\n", "t.csv")

    frame, _ = read_table(ReadSpec(file="t.csv", dates={"day": "%d-%m-%Y"}), path)

    assert frame["day"].dtype == "datetime64[ns]"
    assert frame["day"].iloc[0] == pd.Timestamp(2022, 1, 6)
    assert frame["day"].iloc[1:].isna().all()


def test_short_line_is_padded_and_long_line_is_skipped(tmp_path: Path) -> None:
    text = "a,b,c\n1,2,3\n4,5\n6,7,8,9,10\n11,12,13\n"

    frame, report = read_table(ReadSpec(file="t.csv"), write(tmp_path, text, "t.csv"))

    assert frame["a"].tolist() == [1.0, 4.0, 11.0]
    assert math.isnan(frame["c"].iloc[1])
    assert report.refusals["too_many_fields"].first == [4]


def test_an_unclosed_quote_costs_its_own_line_only(tmp_path: Path) -> None:
    # The csv module would make the rest of the file one field after line 3's lone quote.
    text = 'a,b\n1,x\n2,"open\n3,y\n4,z\n5,"quoted, with comma"\n'

    frame, report = read_table(ReadSpec(file="t.csv"), write(tmp_path, text, "t.csv"))

    assert frame["a"].tolist() == [1.0, 3.0, 4.0, 5.0]
    assert frame["b"].tolist() == ["x", "y", "z", "quoted, with comma"]
    assert report.to_json()["refused_by_reason"] == {"unclosed_quote": {"count": 1, "first": [3]}}
    assert (report.lines, report.header_lines, report.read, report.kept) == (6, 1, 5, 4)


def test_a_quoted_field_may_span_lines_when_it_makes_one_record(tmp_path: Path) -> None:
    text = 'a,b\n1,"two\nlines"\n2,z\n'

    frame, report = read_table(ReadSpec(file="t.csv"), write(tmp_path, text, "t.csv"))

    assert frame["b"].tolist() == ["two\nlines", "z"]
    assert report.refused == 0 and report.read == 2


@pytest.mark.parametrize("quoted", [False, True])
def test_an_oversized_field_is_refused_with_its_line_number(tmp_path: Path, quoted: bool) -> None:
    big = "x" * 5_000
    cell = f'"{big}"' if quoted else big
    text = f"a,b\n1,ok\n2,{cell}\n3,ok\n"

    frame, report = read_table(ReadSpec(file="t.csv"), write(tmp_path, text, "t.csv"), 1_000)

    assert frame["a"].tolist() == [1.0, 3.0]
    assert report.to_json()["refused_by_reason"] == {"field_too_long": {"count": 1, "first": [3]}}


def test_a_quoted_field_up_to_the_configured_length_is_kept(tmp_path: Path) -> None:
    big = "y" * 200_000  # over the csv module's default limit of 131,072 characters
    text = f'a,b\n1,"{big}"\n'

    frame, report = read_table(ReadSpec(file="t.csv"), write(tmp_path, text, "t.csv"), 300_000)

    assert frame["b"].tolist() == [big] and report.refused == 0


def test_bad_quoting_and_blank_lines_are_accounted(tmp_path: Path) -> None:
    text = 'a,b\n\n1,"x"y\n2,z\n\n'

    frame, report = read_table(ReadSpec(file="t.csv"), write(tmp_path, text, "t.csv"))

    assert frame["a"].tolist() == [2.0]
    assert report.blank_lines == 2 and report.lines == 5
    assert report.refusals["bad_quoting"].first == [3]


def test_a_multi_character_separator_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="separator must be one character"):
        read_table(ReadSpec(file="t.csv", separator=";;"), write(tmp_path, "a;;b\n", "t.csv"))


def test_unknown_date_column_is_a_config_error(tmp_path: Path) -> None:
    spec = danish_spec(dates={"sold_on": "%d-%m-%Y"})
    with pytest.raises(ConfigError, match="'sold_on'"):
        read_table(spec, write(tmp_path, BOLIGA_LINES))


def test_too_few_columns_named_is_a_data_error(tmp_path: Path) -> None:
    spec = danish_spec(columns=BOLIGA_COLUMNS[:6])
    with pytest.raises(DataError, match="names 6 columns, but the file has 7"):
        read_table(spec, write(tmp_path, BOLIGA_LINES))


def test_renaming_a_header_with_the_wrong_count_is_a_data_error(tmp_path: Path) -> None:
    spec = ReadSpec(file="t.csv", columns=["a", "b", "c"])
    with pytest.raises(DataError, match="names 3 columns, but the file has 2"):
        read_table(spec, write(tmp_path, "x,y\n1,2\n", "t.csv"))


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "x,x\n1,2\n", "t.csv")
    with pytest.raises(DataError, match=r"more than once: \['x'\]"):
        read_table(ReadSpec(file="t.csv"), path)
    with pytest.raises(ConfigError, match=r"read.columns names these columns more than once"):
        read_table(ReadSpec(file="t.csv", columns=["a", "a"]), path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="table file not found"):
        read_table(danish_spec(), tmp_path / "absent.csv")


def test_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a file"):
        read_table(danish_spec(), tmp_path)


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file_is_a_data_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="is empty"):
        read_table(danish_spec(), path)


def test_binary_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "model.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="binary"):
        read_table(danish_spec(), path)


def test_wrong_encoding_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("Vængevej 6,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="cannot be decoded as utf-8"):
        read_table(ReadSpec(file="latin.csv", header=False, columns=["a", "b"]), path)

    frame, _ = read_table(
        ReadSpec(file="latin.csv", header=False, columns=["a", "b"], encoding="latin-1"), path
    )
    assert frame["a"].tolist() == ["Vængevej 6"]


def test_utf16_is_read_and_an_unknown_encoding_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes("by,pris\nKøge,1\n".encode("utf-16"))

    frame, _ = read_table(ReadSpec(file="wide.csv", encoding="utf-16"), path)

    assert frame.to_dict("records") == [{"by": "Køge", "pris": 1.0}]
    with pytest.raises(ConfigError, match="'klingon' is not a known encoding"):
        read_table(ReadSpec(file="wide.csv", encoding="klingon"), path)


# ---------------------------------------------------------------------------------------------
# Danish addresses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "floor", "side"),
    [
        ("Vængevej 6", None, None),
        ("Dommervænget 12C st. th", 0.0, "th"),
        ("Otte Ruds Gade 13 1. th", 1.0, "th"),
        ("Parkvej 14 1. tv", 1.0, "tv"),
        ("Mathildevej 2 st. tv", 0.0, "tv"),
        ("Nyborgvej 54 kl. th", -1.0, "th"),
        ("Kroghsgade 8 kl", -1.0, None),
        ("Stationsvej 4 st", 0.0, None),
        ("Vesterbrogade 41 1. mf", 1.0, "mf"),
        ("Rebæk Søpark 3 2.", 2.0, None),
        ("Herlev Hovedgade 100 1", 1.0, None),
        ("Strandgade 30C st. TH.", 0.0, "th"),
        ("Nørrebrogade 12C 3. th", 3.0, "th"),
        ("Bagsværd Hovedgade 116B 12. d", 12.0, None),
        ("Danasvej 27 st. 3", 0.0, None),
        ("Robert Jacobsens Vej 72 2. t2", 2.0, None),
        ("Nærum Hovedgade 15 2. tv c", 2.0, None),
        ("Gl Nyrupvej 48", None, None),
        ("Bork Hytteby 135", None, None),
        ("Frederik 3.s Vej 13", None, None),
        ("H. C. Andersens Boulevard 2 4. th", 4.0, "th"),
        ("Christian 9 Vej 21 2. tv", 2.0, "tv"),
        ("Sv. Grathes Vej 15. tv", None, "tv"),
        ("Lille Amerika 22C. 303", None, None),
        ("Vej 2, 1. th", 1.0, "th"),
        ("", None, None),
    ],
)
def test_danish_floor_and_side(address: str, floor: float | None, side: str | None) -> None:
    assert danish_floor(address) == floor
    assert danish_side(address) == side


# ---------------------------------------------------------------------------------------------
# derive_columns
# ---------------------------------------------------------------------------------------------


def sales_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "address": ["Parkvej 14 1. tv", "Vængevej 6", None, "Nyborgvej 54 kl. th"],
            "zip_city": ["9000 Aalborg", "5771 Stenstrup", "Ukendt", None],
            "price": [1_340_000.0, 750_000.0, 500_000.0, np.nan],
            "area": [80.0, 0.0, np.nan, 50.0],
        }
    )


def test_derive_every_op() -> None:
    frame = sales_frame()
    original = frame.copy()
    derivations = [
        Derivation(name="zip", op="regex", source="zip_city", pattern=r"^(\d{4})\b"),
        Derivation(name="floor", op="danish_floor", source="address"),
        Derivation(name="side", op="danish_side", source=["address"]),
        Derivation(name="price_per_m2", op="ratio", source=["price", "area"]),
        Derivation(name="price_copy", op="copy", source="price"),
        Derivation(name="zip_again", op="copy", source="zip"),
    ]

    derived = derive_columns(frame, derivations)

    pd.testing.assert_frame_equal(frame, original)  # the input is untouched
    assert derived["zip"].tolist() == ["9000", "5771", None, None]
    assert derived["floor"].dtype == np.float64
    assert derived["floor"].loc[[0, 3]].tolist() == [1.0, -1.0]
    assert derived["floor"].loc[[1, 2]].isna().all()  # no floor; missing address
    assert derived["side"].tolist() == ["tv", None, None, "th"]
    # 1,340,000 / 80; divisor 0 -> NaN; divisor NaN -> NaN; numerator NaN -> NaN.
    assert derived["price_per_m2"].iloc[0] == 16750.0
    assert derived["price_per_m2"].iloc[1:].isna().all()
    pd.testing.assert_series_equal(derived["price_copy"], frame["price"], check_names=False)
    assert derived["zip_again"].tolist() == ["9000", "5771", None, None]


def test_the_schema_names_exactly_the_ops_derive_columns_knows() -> None:
    """The schema's ``op`` choices and the registry of ops (generic plus named parsers) agree, so
    a new parser needs an entry in both and a schema can never name an op nobody implements."""
    schema_ops = set(get_args(Derivation.model_fields["op"].annotation))
    assert schema_ops == set(DERIVATION_OPS)
    assert set(PARSERS) == {"danish_floor", "danish_side"}
    assert set(PARSERS) <= schema_ops


@pytest.mark.parametrize("op", sorted(PARSERS))
def test_every_registered_parser_derives_a_column_from_text(op: str) -> None:
    derivation = Derivation(name="parsed", op=op, source="address")
    derived = derive_columns(sales_frame(), [derivation])["parsed"]
    parser = PARSERS[op]
    expected = [None if a is None else parser.parse(a) for a in sales_frame()["address"]]
    if parser.numeric:
        assert derived.dtype == np.float64
        np.testing.assert_array_equal(derived.to_numpy(), np.array(expected, dtype=float))
    else:
        assert derived.tolist() == expected


def test_regex_on_a_numeric_column_reads_integers_plainly() -> None:
    frame = pd.DataFrame({"zip": [2100.0, 8000.0, np.nan]})
    derived = derive_columns(
        frame, [Derivation(name="region", op="regex", source="zip", pattern=r"^(\d)")]
    )
    assert derived["region"].tolist() == ["2", "8", None]


def test_derive_unknown_source_names_derivation_and_column() -> None:
    derivation = Derivation(name="floor", op="danish_floor", source="adresse")
    with pytest.raises(ConfigError, match=r"derivation 'floor': source column 'adresse'"):
        derive_columns(sales_frame(), [derivation])

    ratio = Derivation(name="ppm", op="ratio", source=["price", "size"])
    with pytest.raises(ConfigError, match=r"derivation 'ppm': source column 'size'"):
        derive_columns(sales_frame(), [ratio])


@pytest.mark.parametrize(
    ("derivation", "message"),
    [
        (Derivation(name="z", op="regex", source="zip_city", pattern=r"^\d{4}"), "capture group"),
        (Derivation(name="z", op="regex", source="zip_city", pattern=r"(\d"), "invalid pattern"),
        (Derivation(name="r", op="ratio", source=["address", "area"]), "not numeric"),
        (Derivation(name="c", op="copy", source=["price", "area"]), "takes one source column"),
    ],
)
def test_derive_config_mistakes(derivation: Derivation, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        derive_columns(sales_frame(), [derivation])


# ---------------------------------------------------------------------------------------------
# apply_filters
# ---------------------------------------------------------------------------------------------


def filter_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "area": [50.0, 10.0, np.nan, 200.0, 80.0, 60.0],
            "zip": [2100.0, 8000.0, 2100.0, 2100.0, np.nan, 2100.0],
            "kind": ["flat", "house", "flat", "flat", "flat", None],
        },
        index=[10, 11, 12, 13, 14, 15],
    )


def test_filters_apply_in_order_and_report_rows_removed() -> None:
    filters = [
        RowFilter(column="area", min=20, max=150),
        RowFilter(column="zip", allowed=["2100", "8000"]),
        RowFilter(column="kind", not_null=True),
    ]

    kept, report = apply_filters(filter_frame(), filters)

    # area removes 10 (below), NaN and 200 (above); zip removes the NaN zip (row 14);
    # kind removes the missing kind (row 15).
    assert kept.index.tolist() == [10]
    assert report == [
        {"filter": "20 <= area <= 150", "column": "area", "rows_before": 6, "rows_removed": 3},
        {
            "filter": "zip in ['2100', '8000']",
            "column": "zip",
            "rows_before": 3,
            "rows_removed": 1,
        },
        {"filter": "kind is not null", "column": "kind", "rows_before": 2, "rows_removed": 1},
    ]
    json.dumps(report)


def test_min_and_max_are_inclusive() -> None:
    kept, report = apply_filters(filter_frame(), [RowFilter(column="area", min=50, max=80)])
    assert kept["area"].tolist() == [50.0, 80.0, 60.0]
    assert report[0]["rows_removed"] == 3

    kept, report = apply_filters(filter_frame(), [RowFilter(column="area", max=10)])
    assert kept["area"].tolist() == [10.0]
    assert report[0]["filter"] == "area <= 10"


def test_allowed_compares_as_text_and_combines_with_not_null() -> None:
    row_filter = RowFilter(column="kind", allowed=["flat"], not_null=True)
    kept, report = apply_filters(filter_frame(), [row_filter])
    assert kept.index.tolist() == [10, 12, 13, 14]
    assert report[0]["filter"] == "kind is not null and kind in ['flat']"


def test_filter_config_mistakes() -> None:
    with pytest.raises(ConfigError, match="column 'size' is not in the table"):
        apply_filters(filter_frame(), [RowFilter(column="size", min=1)])
    with pytest.raises(ConfigError, match="'kind' is not numeric"):
        apply_filters(filter_frame(), [RowFilter(column="kind", min=1)])


# ---------------------------------------------------------------------------------------------
# Outliers
# ---------------------------------------------------------------------------------------------


def test_iqr_bounds_and_drop() -> None:
    frame = pd.DataFrame({"price": [1.0, 2.0, 3.0, 4.0, 100.0, np.nan]})

    bounds = fit_outlier_bounds(frame, [OutlierRule(column="price", k=1.5)])

    # Q1 = 2, Q3 = 4 (linear interpolation on 1, 2, 3, 4, 100), IQR = 2: [2 - 3, 4 + 3].
    assert bounds == [
        {"column": "price", "method": "iqr", "group_by": None, "global": [-1.0, 7.0], "groups": {}}
    ]
    kept, report = drop_outliers(frame, bounds)
    assert kept["price"].tolist() == [1.0, 2.0, 3.0, 4.0]  # 100 and the NaN row are dropped
    assert report == [{"column": "price", "group_by": None, "rows_before": 6, "rows_removed": 2}]


def test_quantile_bounds_are_inclusive() -> None:
    frame = pd.DataFrame({"v": [float(i) for i in range(11)]})
    rule = OutlierRule(column="v", method="quantile", lower=0.1, upper=0.9)

    bounds = fit_outlier_bounds(frame, [rule])

    assert bounds[0]["global"] == [1.0, 9.0]
    kept, report = drop_outliers(frame, bounds)
    assert kept["v"].tolist() == [float(i) for i in range(1, 10)]
    assert report[0]["rows_removed"] == 2


def test_grouped_bounds_fall_back_to_global_for_small_unknown_and_missing_groups() -> None:
    train = pd.DataFrame(
        {
            "zip": [2100.0] * 5 + [8000.0] * 2 + [9000.0] * 4,
            "ppm": [10.0, 11.0, 12.0, 13.0, 14.0, 100.0, 1000.0, 12.0, np.nan, np.nan, np.nan],
        }
    )
    rule = OutlierRule(
        column="ppm", method="quantile", lower=0.25, upper=0.75, group_by="zip", min_group_size=4
    )

    bounds = fit_outlier_bounds(train, [rule])

    # Global over 10, 11, 12, 12, 13, 14, 100, 1000: q25 at position 1.75 = 11.75,
    # q75 at position 5.25 = 14 + 0.25 * 86 = 35.5. Zip 2100: [11, 13]. Zip 8000 has 2 values
    # and zip 9000 only one non-null value: both below min_group_size, so global bounds.
    assert bounds[0]["global"] == [11.75, 35.5]
    assert bounds[0]["groups"] == {"2100": [11.0, 13.0]}
    assert json.loads(json.dumps(bounds)) == bounds

    new = pd.DataFrame(
        {
            "zip": [2100.0, 2100.0, 2100.0, 8000.0, 7000.0, np.nan, 9000.0],
            "ppm": [10.5, 11.0, 13.0, 20.0, 36.0, 12.0, 11.0],
        },
        index=list("abcdefg"),
    )
    kept, report = drop_outliers(new, json.loads(json.dumps(bounds)))

    # a: below its group's 11; b, c: on its group's bounds; d: global keeps 20; e: unknown zip,
    # global drops 36; f: missing zip, global keeps 12; g: small group, global drops 11.
    assert kept.index.tolist() == ["b", "c", "d", "f"]
    assert report == [{"column": "ppm", "group_by": "zip", "rows_before": 7, "rows_removed": 3}]


def test_rules_apply_in_order() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 50.0], "b": [5.0, 5.0, np.nan, 5.0]})
    bounds: list[dict[str, Any]] = [
        {"column": "a", "group_by": None, "global": [0.0, 10.0], "groups": {}},
        {"column": "b", "group_by": None, "global": [0.0, 10.0], "groups": {}},
    ]

    kept, report = drop_outliers(frame, bounds)

    assert kept.index.tolist() == [0, 1]
    assert [entry["rows_removed"] for entry in report] == [1, 1]
    assert [entry["rows_before"] for entry in report] == [4, 3]


@pytest.mark.parametrize(
    ("rule", "error", "message"),
    [
        (OutlierRule(column="size"), ConfigError, "column 'size' is not in the table"),
        (OutlierRule(column="kind"), ConfigError, "'kind' is not numeric"),
        (OutlierRule(column="empty"), DataError, "no values to fit bounds on"),
        (OutlierRule(column="v", group_by="zone"), ConfigError, "column 'zone' is not in"),
        (
            OutlierRule(column="v", method="quantile", lower=0.9, upper=0.1),
            ConfigError,
            "lower < upper",
        ),
        (OutlierRule(column="v", k=-1), ConfigError, "k must not be negative"),
    ],
)
def test_outlier_rule_mistakes(rule: OutlierRule, error: type[Exception], message: str) -> None:
    frame = pd.DataFrame({"v": [1.0, 2.0], "kind": ["a", "b"], "empty": [np.nan, np.nan]})
    with pytest.raises(error, match=message):
        fit_outlier_bounds(frame, [rule])


def test_malformed_bounds_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="malformed outlier bounds"):
        drop_outliers(pd.DataFrame({"v": [1.0]}), [{"column": "v"}])


# ---------------------------------------------------------------------------------------------
# The real boliga file
# ---------------------------------------------------------------------------------------------


def test_reads_the_real_boliga_sales() -> None:
    path = REAL_TABLES / "boliga_sales_2021.csv"
    if not path.is_file():
        pytest.skip(f"real boliga sales not found at {path}")

    frame, report = read_table(danish_spec(file=path.name), path)

    # The file has 32,818 lines; one of them (line 19,957) is two sales glued together by a lost
    # newline ("...,1887Parkvej 14 1. tv,9000 Aalborg,..."), which is refused and counted.
    assert report.lines == report.read == 32_818
    assert report.to_json()["refused_by_reason"] == {
        "too_many_fields": {"count": 1, "first": [19_957]}
    }
    assert len(frame) == report.kept == 32_817
    for column in ("price_dkk", "area_m2", "price_per_m2", "construction_year"):
        assert frame[column].dtype == np.float64, column
        assert frame[column].notna().mean() > 0.99, column
    assert frame["price_dkk"].iloc[0] == 750_000.0
    assert frame["price_per_m2"].iloc[0] == 8_427.0
    assert frame["sale_date"].min() >= pd.Timestamp(2021, 7, 1)
    assert frame["sale_date"].max() < pd.Timestamp(2022, 2, 1)
    assert frame["sale_date"].notna().all()

    derived = derive_columns(frame, [Derivation(name="floor", op="danish_floor", source="address")])
    apartments = int(derived["floor"].notna().sum())
    share = apartments / len(derived)
    print(f"boliga: {apartments} of {len(derived)} sales have a floor ({share:.1%})")
    assert 0.05 <= share <= 0.50, f"{apartments} of {len(derived)} rows have a floor ({share:.1%})"
    assert set(derived["floor"].dropna().unique()) >= {-1.0, 0.0, 1.0, 2.0}


def test_concat_joins_sources_and_is_missing_when_any_part_is() -> None:
    frame = pd.DataFrame({"street": ["Parkvej", "Ryesgade", None], "zip": ["8000", None, "2100"]})
    derived = derive_columns(frame, [Derivation(name="key", op="concat", source=["street", "zip"])])
    assert derived["key"].tolist() == ["Parkvej | 8000", None, None]


def _damaged_copy(tmp_path: Path, line: int, change: Any) -> Path:
    """The real file with ``change`` applied to one line (1-based)."""
    source = REAL_TABLES / "boliga_sales_2021.csv"
    if not source.is_file():
        pytest.skip(f"real boliga sales not found at {source}")
    lines = source.read_text(encoding="utf-8").split("\n")
    lines[line - 1] = change(lines[line - 1])
    return write(tmp_path, "\n".join(lines), "damaged.csv")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda line: '"' + line, "unclosed_quote"),
        (lambda line: line.replace(",", "," + "x" * 5_000_000 + ",", 1), "field_too_long"),
    ],
    ids=["unclosed-quote", "5-MB-line"],
)
def test_a_damaged_line_of_the_real_file_costs_one_row(
    tmp_path: Path, change: Any, reason: str
) -> None:
    # On main the unclosed quote swallowed 1,967 lines and the 5 MB line vanished, silently.
    path = _damaged_copy(tmp_path, 1001, change)

    frame, report = read_table(danish_spec(file=path.name), path)

    assert report.refusals[reason].first == [1001]
    assert report.refused == 2  # the damaged line and the real file's glued line
    assert len(frame) == report.kept == 32_816
