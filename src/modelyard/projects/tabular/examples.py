"""The tabular bundle's example: a few test-split rows as the CSV a person sends in batch mode.

The first :data:`EXAMPLE_ROWS` rows of the prepared test split (never trained on) that the served
request schema accepts, one column per request field, named as the request names them (no target:
it is what the model values). Missing values are empty cells, dates ``YYYY-MM-DD``, whole numbers
without a decimal point.
"""

import csv
import io
from typing import Any

import pandas as pd
from pydantic import ValidationError

from modelyard.core.bundle_examples import ExampleFile
from modelyard.projects.tabular.schema import TableSchema
from modelyard.projects.tabular.serving import row_model
from modelyard.projects.tabular.table_io import feature_columns

EXAMPLE_ROWS = 5
EXAMPLE_NAME = "test-rows.csv"


def example_rows(test: pd.DataFrame, schema: TableSchema) -> list[ExampleFile]:
    """The CSV of up to :data:`EXAMPLE_ROWS` valid test rows; none when no row is valid."""
    row_type = row_model(schema)
    names = schema.features.names()
    columns = feature_columns(test.head(EXAMPLE_ROWS * 20), schema)
    rows = []
    for i in range(len(next(iter(columns.values()), []))):
        values = {name: columns[name][i] for name in names}
        try:
            row_type.model_validate(values)
        except ValidationError:
            continue
        rows.append([_cell(values[name]) for name in names])
        if len(rows) == EXAMPLE_ROWS:
            break
    if not rows:
        return []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(rows)
    return [
        ExampleFile(
            name=EXAMPLE_NAME,
            media_type="text/csv",
            description=f"{len(rows)} rows of the test split, one column per request field",
            data=out.getvalue().encode(),
        )
    ]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)
