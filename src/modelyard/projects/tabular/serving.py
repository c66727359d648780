"""Tabular serving: a JSON request model generated from the table schema. numpy + pydantic only.

``POST /predict`` takes one row object or a list of them. Field names, types, allowed ranges and
required/optional come from the schema saved in the bundle, so the OpenAPI page documents the
exact features the model was trained on. Defined behaviour for imperfect input:

* an optional feature left out is imputed exactly as in training (median / "missing" column);
* a category never seen in training (e.g. a new zip code) is valued as the "other" category
  (one-hot) and with its parent's estimate (target-encoded, e.g. a new building gets its
  street's), and the prediction carries a warning saying so;
* a value outside the schema's range, a wrong type, an unknown field, an empty list or more than
  ``max_rows`` rows is a 422 with the offending field named.
"""

import csv
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from modelyard.core.errors import DataError
from modelyard.projects.tabular.features import FeaturePipeline, category_key, decode_target
from modelyard.projects.tabular.schema import TableSchema
from modelyard.serving.adapter import ServingAdapter
from modelyard.serving.context import PredictionEvent, record_prediction
from modelyard.serving.http_checks import require_json

DEFAULT_MAX_ROWS = 1000


def row_model(schema: TableSchema, example: dict[str, Any] | None = None) -> type[BaseModel]:
    """The request row model: one field per feature, typed and bounded as the schema says."""
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
        ]
        fields[numeric.name] = (kind, ...) if numeric.required else (kind | None, None)
    for categorical in schema.features.categorical:
        kind = Annotated[
            str | int,
            Field(description=categorical.description or None, union_mode="left_to_right"),
        ]
        fields[categorical.name] = (kind, ...) if categorical.required else (kind | None, None)
    for day in schema.features.date:
        kind = Annotated[date, Field(description=day.description or None)]
        fields[day.name] = (kind, ...) if day.required else (kind | None, None)
    config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [example]} if example else None
    )
    model: type[BaseModel] = create_model("Row", __config__=config, **fields)
    return model


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
        pre = self.bundle.manifest.preprocessing
        self.schema = TableSchema.model_validate(pre["schema"])
        self.pipeline = FeaturePipeline.from_json(pre["features"])
        self.target_params: dict[str, Any] = pre["target"]
        self.max_rows = int(self.settings.get("max_rows", DEFAULT_MAX_ROWS))
        self.example = pre.get("example_row")
        self.Row = row_model(self.schema, self.example)
        self.Valuation = valuation_model(self.schema)
        self.known = {
            f.name: self.pipeline.known_categories(f.name) for f in self.schema.features.categorical
        }

    def check_contract(self) -> None:
        """One column per encoded feature in, one score out."""
        width = len(self.pipeline.output_names)
        self.require_axis("inputs", -1, width, f"{width} encoded features")
        self.require_axis("outputs", -1, 1, "one score per row")

    def info(self) -> dict[str, Any]:
        return {
            "target": self.schema.target.name,
            "unit": self.schema.target.unit,
            "features": self.schema.features.names(),
            "max_rows": self.max_rows,
            # a valid request row (from the training data), for clients and load tests
            "example": self.example,
        }

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
        if self.example:
            self.predict_rows([self.Row.model_validate(self.example).model_dump()])

    def router(self) -> APIRouter:
        router = APIRouter(tags=["prediction"])
        manifest = self.bundle.manifest
        row_type = self.Row
        payload_type: Any = row_type | list[row_type]  # type: ignore[valid-type]
        response_type = create_model(
            "ValuationResponse",
            model=(str, ...),
            version=(str, ...),
            predictions=(list[self.Valuation], ...),  # type: ignore[name-defined]
        )

        @router.post(
            "/predict",
            response_model=response_type,
            dependencies=[Depends(require_json)],
            responses={
                415: {"description": "Body is not JSON"},
                422: {"description": "Bad field, range, type or row count"},
            },
        )
        def predict(payload: Annotated[payload_type, Body()]) -> Any:
            """Value one row or a list of rows."""
            rows = payload if isinstance(payload, list) else [payload]
            if not 1 <= len(rows) <= self.max_rows:
                raise HTTPException(
                    422, f"send between 1 and {self.max_rows} rows, got {len(rows)}"
                )
            inputs = [row.model_dump() for row in rows]
            predictions = self.predict_rows(inputs)
            target = self.schema.target.name
            record_prediction(
                PredictionEvent(
                    inputs=inputs,
                    outputs=predictions,
                    values={target: [p[target] for p in predictions]},
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
        with output.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*records[0].keys(), *extra, "warnings"])
            writer.writeheader()
            for record, result in zip(records, results, strict=True):
                writer.writerow(
                    {
                        **record,
                        **{k: result[k] for k in extra},
                        "warnings": "; ".join(result["warnings"]),
                    }
                )
        return len(results)
