"""CSV injection: text copied into CSV files people open in spreadsheets is neutralised."""

import csv
import re
from pathlib import Path

import pytest

from bundle_factory import make_nilm_bundle
from modelyard.core.spreadsheet import (
    SpreadsheetSafeWriter,
    spreadsheet_original,
    spreadsheet_safe,
)
from modelyard.projects.nilm.serving import NilmServing
from modelyard.serving.runtime import OnnxModel

NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def assert_no_formula(path: Path) -> list[list[str]]:
    """Every cell of the CSV at ``path`` is harmless in a spreadsheet; returns the rows."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or NUMBER.fullmatch(
                cell
            ), cell
    return rows


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ('=HYPERLINK("http://evil","x")', '\'=HYPERLINK("http://evil","x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("'=1", "''=1"),
        ("-", "'-"),
    ],
)
def test_formula_text_gets_a_quote_and_comes_back_exactly(text: str, safe: str) -> None:
    assert spreadsheet_safe(text) == safe
    assert spreadsheet_original(safe) == text


@pytest.mark.parametrize(
    "value", ["-3.5", "+1e3", "-.5", "-12", "2100", "Ryesgade 30", "'quoted", "", 1.5, -3, None]
)
def test_numbers_plain_text_and_non_text_are_unchanged(value: object) -> None:
    assert spreadsheet_safe(value) == value
    assert spreadsheet_original(value) == value


def test_nilm_predict_file_neutralises_the_copied_time_column(tmp_path: Path) -> None:
    bundle = make_nilm_bundle(tmp_path / "bundle")
    adapter = NilmServing(bundle, OnnxModel(bundle.model_path), {})
    source = tmp_path / "mains.csv"
    times = [f"2014-01-01 00:{i:02d}:00" for i in range(30)]
    times[3] = '=HYPERLINK("http://evil","click")'
    times[4] = "@SUM(A1)"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Time", "Aggregate"])
        writer.writerows([time, -3.5 if i == 5 else 300.0] for i, time in enumerate(times))
    output = tmp_path / "out.csv"

    assert adapter.predict_file(source, output) == 30

    rows = assert_no_formula(output)
    assert rows[4][0] == '\'=HYPERLINK("http://evil","click")'
    assert rows[5][0] == "'@SUM(A1)"
    assert rows[1][0] == times[0]
    assert rows[6][1] == "-3.500"  # a negative number stays a number


def test_the_writer_checks_every_cell_as_text(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = SpreadsheetSafeWriter(handle)
        writer.writerow(["=header", "n"])
        writer.writerow([ValueError("=1+1"), -3.5, None, 7, "+x"])

    rows = assert_no_formula(path)
    assert rows == [["'=header", "n"], ["'=1+1", "-3.5", "", "7", "'+x"]]
