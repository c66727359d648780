"""Tabular serving: a JSON request model generated from the table schema. numpy + pydantic only.

``POST /predict`` takes one row object or a list of them. Field names, types, allowed ranges and
required/optional come from the schema saved in the bundle, so the OpenAPI page documents the
exact features the model was trained on. Defined behaviour for imperfect input:

* an optional feature left out is imputed exactly as in training (median / "missing" column);
* a categorical field's schema lists the categories known from training as its JSON-schema
  ``examples`` (sorted; all of them, or none for a field with more than
  ``MAX_LISTED_CATEGORIES``, such as streets and buildings), so a form can offer them as choices;
* a category never seen in training (e.g. a new zip code) is valued as the "other" category
  (one-hot) and with its parent's estimate (target-encoded, e.g. a new building gets its
  street's), and the prediction carries a warning saying so;
* a value outside the schema's range, a wrong type, an unknown field, an empty list or more than
  ``max_rows`` rows is a 422 with the offending field named.

Every accepted value can be stored in the prediction log: numbers are finite JSON numbers,
categories are strings of at most ``MAX_CATEGORY_CHARS`` characters or integers within
``MAX_CATEGORY_INT`` (exact in a double, and in any 64-bit column), dates are ISO strings.
The prediction log stores the validated rows (every schema field, None for one left out) and
their predictions: they are the drift features themselves (:mod:`.drift_features`), so logging
for the monitor costs nothing more. The body is read by the route itself, counted before it is
parsed (see :mod:`modelyard.serving.http_checks`), so that a million empty rows cost no more
than the largest valid request.
"""

import csv
import math
import re
from collections.abc import Mapping
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    model_validator,
)
from starlette.concurrency import run_in_threadpool

from modelyard.core.errors import DataError
from modelyard.core.spreadsheet import SpreadsheetSafeWriter
from modelyard.projects.tabular.contract import TabularContract
from modelyard.projects.tabular.feature_values import category_key
from modelyard.projects.tabular.schema import TableSchema
from modelyard.projects.tabular.target_scaling import decode_target
from modelyard.serving.adapter import ExampleRequest, ServingAdapter
from modelyard.serving.context import PredictionEvent, record_prediction
from modelyard.serving.http_checks import (
    BodyLimits,
    LengthError,
    check_json,
    error_responses,
    json_body_schema,
    read_json_bytes,
    validate_json_body,
)
from modelyard.serving.value_units import target_unit

#: Longest category given as a string (zip codes, sides, streets with house numbers).
MAX_CATEGORY_CHARS = 100
#: Largest category given as an integer: 2**53 - 1, exact as a double and within 64 bits.
MAX_CATEGORY_INT = 2**53 - 1
#: Bytes a value may take in a body: a number's longest repr, a string's escaped characters
#: (an astral character escapes to 12 bytes) and, per field, its key, quotes, colon, commas and
#: indentation.
_NUMBER_BYTES = 32
_ESCAPED_CHAR_BYTES = 12
_FIELD_BYTES = 16
_BYTES_BESIDE_ROWS = 4096
_LIST_START = re.compile(rb"\s*\[")
#: Most known categories a field's schema lists (all or none: a partial list would pass the rest
#: off as unseen); 2,000 keep the schema of the AVM's ~600 zip codes whole at about 12 KB.
MAX_LISTED_CATEGORIES = 2000
#: The date of a schema-built example row (bundles saved without an example row).
_SCHEMA_ROW_DATE = "2020-01-01"


def _json_number(value: Any, info: ValidationInfo) -> Any:
    """Numbers as the schema declares them: a JSON number, not a boolean or a numeric string
    (CSV text, validated in python mode by ``predict_file``, is still read as a number)."""
    if isinstance(value, bool) or (info.mode == "json" and isinstance(value, str)):
        raise ValueError("expected a number")
    return value


def _category(value: Any) -> int | str:
    """A category as the schema declares it: a text of at most ``MAX_CATEGORY_CHARS``
    characters (kept as text: "0800" stays "0800"), or a JSON integer (2100, or 2100.0 as JSON
    Schema counts integers) within ``MAX_CATEGORY_INT``; never a boolean."""
    if isinstance(value, str) and len(value) <= MAX_CATEGORY_CHARS:
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_CATEGORY_INT:
        return value
    raise ValueError(
        f"expected a text of at most {MAX_CATEGORY_CHARS} characters or an integer "
        f"within ±{MAX_CATEGORY_INT}"
    )


Category = Annotated[
    int | str,
    PlainValidator(_category),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": -MAX_CATEGORY_INT, "maximum": MAX_CATEGORY_INT},
                {"type": "string", "maxLength": MAX_CATEGORY_CHARS},
            ]
        }
    ),
]
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date_text(value: Any) -> Any:
    """Dates as the schema declares them (``format: date``, YYYY-MM-DD), from JSON and from CSV
    text alike; pydantic alone would also take a number of seconds since 1970."""
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        return value
    raise ValueError("expected a date as YYYY-MM-DD")


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]


def row_model(
    schema: TableSchema,
    example: dict[str, Any] | None = None,
    known: Mapping[str, set[str]] | None = None,
) -> type[BaseModel]:
    """The request row model: one field per feature, typed and bounded as the schema says; a
    categorical field's schema lists its ``known`` categories (see :func:`category_schema`)."""
    fields: dict[str, Any] = {}
    for numeric in schema.features.numeric:
        kind: Any = Annotated[
            float,
            Field(
                ge=numeric.min,
                le=numeric.max,
                allow_inf_nan=False,
                description=numeric.description or None,
            ),
            BeforeValidator(_json_number),
        ]
        fields[numeric.name] = (kind, ...) if numeric.required else (kind | None, None)
    for categorical in schema.features.categorical:
        # on the field: Category's schema is fixed
        about, listed = category_schema(
            categorical.description, (known or {}).get(categorical.name)
        )
        fields[categorical.name] = (
            (Category, Field(description=about, examples=listed))
            if categorical.required
            else (Category | None, Field(None, description=about, examples=listed))
        )
    for day in schema.features.date:
        kind = Annotated[IsoDate, Field(description=day.description or None)]
        fields[day.name] = (kind, ...) if day.required else (kind | None, None)
    config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [example]} if example else None
    )
    model: type[BaseModel] = create_model("Row", __config__=config, **fields)
    return model


#: What a categorical field's description says about a value the model never saw.
UNSEEN_NOTE = "another is valued as unseen (with a warning)"


def category_schema(
    description: str | None, known: set[str] | None
) -> tuple[str | None, list[str] | None]:
    """A categorical field's description and ``examples``: every category known from training,
    sorted (numbers by value), when there are at most :data:`MAX_LISTED_CATEGORIES`; else none,
    and the description says so. Either way another value is accepted, valued as unseen."""
    if not known:
        return description or None, None
    about = f"{description}. " if description else ""
    if len(known) > MAX_LISTED_CATEGORIES:
        note = f"{len(known)} values known from training (too many to list); {UNSEEN_NOTE}"
        return about + note, None
    return about + f"Known values listed; {UNSEEN_NOTE}", sorted(known, key=_natural)


def _natural(key: str) -> tuple[int, int, str]:
    """Whole numbers by value before other text: zip codes 800 < 2100 < 10000."""
    return (0, int(key), key) if key.isdigit() else (1, 0, key)


def schema_row(schema: TableSchema, known: dict[str, set[str]]) -> dict[str, Any]:
    """A valid row built from the schema alone, for bundles saved without an example row: each
    required number in the middle of its bounds, a known category, a fixed date."""
    row: dict[str, Any] = {}
    for numeric in schema.features.numeric:
        if numeric.required:
            low, high = numeric.min, numeric.max
            if low is not None and high is not None:
                row[numeric.name] = (low + high) / 2
            else:
                row[numeric.name] = low if low is not None else min(1.0, high or 1.0)
    for categorical in schema.features.categorical:
        if categorical.required:
            row[categorical.name] = min(known.get(categorical.name) or {"unknown"})
    for day in schema.features.date:
        if day.required:
            row[day.name] = _SCHEMA_ROW_DATE
    return row


def body_limits(schema: TableSchema, max_rows: int) -> BodyLimits:
    """What a valid body of up to ``max_rows`` rows holds at most (see :class:`BodyLimits`)."""
    features = schema.features
    fields = len(features.names())
    value_bytes = (
        len(features.numeric) * _NUMBER_BYTES
        + len(features.categorical) * (2 + _ESCAPED_CHAR_BYTES * MAX_CATEGORY_CHARS)
        + len(features.date) * (2 + _ESCAPED_CHAR_BYTES * len("2021-10-15"))
    )
    key_bytes = sum(len(name) + _FIELD_BYTES for name in features.names())
    return BodyLimits(
        max_bytes=max_rows * (2 + value_bytes + key_bytes) + _BYTES_BESIDE_ROWS,
        max_containers=max_rows + 1,
        max_strings=max_rows * 2 * fields,
        max_separators=max_rows * fields,
        too_many=f"the body holds far more values than {max_rows} rows",
    )


def valuation_model(schema: TableSchema) -> type[BaseModel]:
    """One prediction: the target (e.g. price per m2), the derived total, and warnings."""
    fields: dict[str, Any] = {
        schema.target.name: (float, Field(description=f"Predicted {schema.target.name}")),
        "warnings": (list[str], Field(default_factory=list)),
    }
    if schema.total is not None:
        fields[schema.total.name] = (
            float,
            Field(description=f"{schema.target.name} x {schema.total.multiply_by}"),
        )
    model: type[BaseModel] = create_model("Valuation", **fields)
    return model


class TabularServing(ServingAdapter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contract = TabularContract.from_manifest(self.bundle.manifest)
        self.schema = self.contract.schema
        self.pipeline = self.contract.features
        self.target_params = self.contract.target
        # The contract's request limit, with the deployer's explicit setting on top.
        self.max_rows = self.contract.limits.with_overrides(self.settings).max_rows
        self.known = {
            f.name: self.pipeline.known_categories(f.name) for f in self.schema.features.categorical
        }
        self.example = self.contract.example_row or schema_row(self.schema, self.known)
        self.Row = row_model(self.schema, self.example, self.known)
        self.rows_type: Any = Annotated[
            list[self.Row],  # type: ignore[name-defined]
            Field(min_length=1, max_length=self.max_rows),
        ]
        self.row_adapter: TypeAdapter[BaseModel] = TypeAdapter(self.Row)
        self.rows_adapter: TypeAdapter[list[BaseModel]] = TypeAdapter(
            self.rows_type  # type: ignore[arg-type]
        )
        self.body_limits = body_limits(self.schema, self.max_rows)
        self.length_error = LengthError((), self.rows_sentence)
        self.Valuation = valuation_model(self.schema)

    def rows_sentence(self, rows: int) -> str:
        return f"send between 1 and {self.max_rows} rows, got {rows}"

    def parse_rows(self, body: bytes) -> list[dict[str, Any]]:
        """The body's row or rows, validated, as feature values; a list within ``max_rows``."""
        if _LIST_START.match(body):
            rows = validate_json_body(body, self.rows_adapter, self.body_limits, self.length_error)
        else:
            rows = [validate_json_body(body, self.row_adapter, self.body_limits)]
        return [row.model_dump() for row in rows]

    def value(self, body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A request body -> its rows and their predictions (in a worker thread: the JSON
        work of 1000 rows and the model run would hold up the event loop)."""
        inputs = self.parse_rows(body)
        return inputs, self.predict_rows(inputs)

    def check_contract(self) -> None:
        """One column per encoded feature in, one score out."""
        width = len(self.pipeline.output_names)
        self.require_axis("inputs", -1, width, f"{width} encoded features")
        self.require_axis("outputs", -1, 1, "one score per row")

    def task_info(self) -> dict[str, Any]:
        return {
            "target": self.schema.target.name,
            "unit": self.schema.target.unit,
            "features": self.schema.features.names(),
            "max_rows": self.max_rows,
        }

    def example_request(self) -> ExampleRequest:
        """One row: the first validation row saved at training (a schema-built row for bundles
        without one)."""
        return ExampleRequest(json=self.example)

    def predict_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of feature values (validated) -> predictions with warnings, in row order."""
        names = self.schema.features.names()
        columns = {name: [row.get(name) for row in rows] for name in names}
        scores = self.model.run(self.pipeline.transform(columns)).reshape(-1)
        values = decode_target(self.target_params, scores)
        results = []
        for i, row in enumerate(rows):
            result: dict[str, Any] = {
                self.schema.target.name: round(float(values[i]), 2),
                "warnings": self._warnings(row),
            }
            if self.schema.total is not None:
                factor = float(row[self.schema.total.multiply_by])
                result[self.schema.total.name] = round(float(values[i]) * factor, 0)
            results.append(result)
        return results

    def _warnings(self, row: dict[str, Any]) -> list[str]:
        notes = []
        for name, known in self.known.items():
            key = category_key(row.get(name))
            if key is not None and key not in known:
                notes.append(f"{name} {key!r} was not seen in training; valued as an unseen {name}")
        return notes

    def warm_up(self) -> None:
        self.predict_rows([self.Row.model_validate(self.example).model_dump()])

    def router(self) -> APIRouter:
        router = APIRouter(tags=["prediction"])
        manifest = self.bundle.manifest
        body_schema = TypeAdapter(self.Row | self.rows_type).json_schema()
        target = self.schema.target.name
        value_unit = target_unit(self.schema.target.unit, target)
        response_type = create_model(
            "ValuationResponse",
            model=(str, ...),
            version=(str, ...),
            predictions=(list[self.Valuation], ...),  # type: ignore[name-defined]
        )

        @router.post(
            "/predict",
            response_model=response_type,
            openapi_extra=json_body_schema(body_schema),
            responses=error_responses(
                {
                    413: "Body too large for the most rows accepted",
                    415: "Body is not JSON",
                    422: "Not JSON or not UTF-8, bad field, range, type or row count",
                }
            ),
        )
        async def predict(request: Request) -> Any:
            """Value one row or a list of rows."""
            check_json(request)
            body = await read_json_bytes(request, self.body_limits)
            inputs, predictions = await run_in_threadpool(self.value, body)
            record_prediction(
                PredictionEvent(
                    inputs=inputs,
                    outputs=predictions,
                    values={target: [p[target] for p in predictions]},
                    unit=value_unit,
                )
            )
            return {"model": manifest.name, "version": manifest.version, "predictions": predictions}

        return router

    def predict_file(self, source: Path, output: Path) -> int:
        """CSV with one column per feature -> the same CSV plus prediction columns."""
        if not source.is_file():
            raise DataError(f"input CSV not found: {source}")
        try:
            # utf-8-sig: a spreadsheet's byte order mark must not become part of the first name
            with source.open(newline="", encoding="utf-8-sig") as handle:
                records = list(csv.DictReader(handle))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{source} is not a readable UTF-8 CSV file: {exc}") from exc
        if not records:
            raise DataError(f"{source} has no data rows")
        rows = []
        for line, record in enumerate(records, start=2):
            values = {
                k: (v if v != "" else None) for k, v in record.items() if k in self.Row.model_fields
            }
            try:
                rows.append(self.Row.model_validate(values).model_dump())
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise DataError(f"{source}:{line}: {where}: {first['msg']}") from exc
        results = self.predict_rows(rows)
        output.parent.mkdir(parents=True, exist_ok=True)
        extra = [k for k in results[0] if k != "warnings"]
        columns = [name for name in records[0] if name is not None]
        with output.open("w", newline="", encoding="utf-8") as handle:
            # input columns and warnings are copied text: neutralised for spreadsheets
            writer = SpreadsheetSafeWriter(handle)
            writer.writerow([*columns, *extra, "warnings"])
            for record, result in zip(records, results, strict=True):
                writer.writerow(
                    [
                        *(record[name] for name in columns),
                        *(result[k] for k in extra),
                        "; ".join(result["warnings"]),
                    ]
                )
        return len(results)

    # -- ground truth (POST /feedback) -------------------------------------------------------
    @cached_property
    def _truth(self) -> type[BaseModel]:
        return truth_model(self.schema, self.max_rows)

    def truth_model(self) -> type[BaseModel]:
        """``{"rows": [{TARGET: value}, ...]}``, one row per request row in order, or one row
        as ``{TARGET: value}``; values are JSON numbers (a string price is refused)."""
        return self._truth

    def truth_limits(self) -> BodyLimits:
        return truth_limits(self.schema.target.name, self.max_rows)

    def truth_mismatch(self, truth: dict[str, Any], inputs: Any, outputs: Any) -> str | None:
        """The truth has one row per predicted row."""
        given = len(truth.get("rows", []))
        if isinstance(outputs, list) and len(outputs) != given:
            return f"truth has {given} row(s); the prediction valued {len(outputs)}"
        return None


class _RowsTruth(BaseModel):
    """A truth given as one row object is read as ``{"rows": [row]}``."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _one_row(cls, data: Any) -> Any:
        if isinstance(data, dict) and "rows" not in data:
            return {"rows": [data]}
        return data


def truth_model(schema: TableSchema, max_rows: int) -> type[BaseModel]:
    """The tabular truth: the target's true value per request row (positive when the target
    is modelled in logs, as prices are)."""
    target = schema.target
    value: Any = Annotated[
        float,
        Field(allow_inf_nan=False, gt=0 if target.log else None, description=target.unit or None),
        BeforeValidator(_json_number),
    ]
    row = create_model("TruthRow", __config__=ConfigDict(extra="forbid"), **{target.name: value})
    rows: Any = Annotated[list[row], Field(min_length=1, max_length=max_rows)]
    model: type[BaseModel] = create_model("TabularTruth", __base__=_RowsTruth, rows=(rows, ...))
    return model


def truth_limits(target: str, max_rows: int) -> BodyLimits:
    """What one truth of up to ``max_rows`` rows holds at most."""
    return BodyLimits(
        max_bytes=max_rows * (len(target) + _NUMBER_BYTES + _FIELD_BYTES) + _BYTES_BESIDE_ROWS,
        max_containers=max_rows + 2,
        max_strings=max_rows + 2,
        max_separators=max_rows + 2,
        too_many=f"a truth holds far more values than {max_rows} rows",
    )
