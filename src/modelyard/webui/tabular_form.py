"""The tabular form, read from the server's own description: the request fields of ``POST
/predict`` (type, range, date, required, known categories) and the answer's prediction fields.

Nothing here knows a project: a valuation model gets "area_m2" and "price_per_m2" because its
OpenAPI schema names them, and any other table gets its own fields the same way. The server stays
the judge of a value (its 422 sentence is what the page shows); the form only shows the rules.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

#: How a field is entered on the page.
Kind = Literal["number", "integer", "date", "text"]
#: The answer field that holds the server's notes on a row (an unseen category, ...).
WARNINGS_FIELD = "warnings"


class SchemaError(ValueError):
    """The server's OpenAPI schema does not describe a row-valuing ``POST /predict``."""


@dataclass(frozen=True)
class FormField:
    """One request field as the page shows it."""

    name: str
    title: str
    kind: Kind
    required: bool
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    #: Known values (a categorical field): offered as choices, other text still allowed.
    choices: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.title if self.required else f"{self.title} (optional)"

    @property
    def placeholder(self) -> str:
        """What an empty box says it wants (the kind of value; optional boxes may stay empty)."""
        wanted = {"number": "a number", "integer": "a whole number"}.get(self.kind, "")
        if self.required:
            return wanted
        return f"{wanted} or empty" if wanted else "may stay empty"

    @property
    def hint(self) -> str:
        """The description and the allowed range, as one line under the label."""
        parts = [self.description] if self.description else []
        if self.minimum is not None and self.maximum is not None:
            parts.append(f"allowed {self.minimum:g} to {self.maximum:g}")
        elif self.minimum is not None:
            parts.append(f"at least {self.minimum:g}")
        elif self.maximum is not None:
            parts.append(f"at most {self.maximum:g}")
        return "; ".join(parts)


@dataclass(frozen=True)
class AnswerField:
    """One number of the answer (e.g. the target and a total derived from it)."""

    name: str
    title: str
    unit: str = ""


#: JavaScript's safe-integer bound: pydantic writes it as the "range" of any int, which is no
#: rule a person needs to see.
_UNBOUNDED = 2.0**53


def request_fields(openapi: dict[str, Any]) -> list[FormField]:
    """The fields of one row of ``POST /predict``'s JSON body, in the schema's order."""
    row = _row_schema(openapi)
    properties = row.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise SchemaError("the server's POST /predict does not take rows of named fields")
    required = set(row.get("required", []))
    return [
        _form_field(name, _resolve(openapi, spec), name in required)
        for name, spec in properties.items()
    ]


def answer_fields(openapi: dict[str, Any], info: dict[str, Any]) -> list[AnswerField]:
    """The numbers one prediction holds, the target first, with ``/info``'s unit on the target
    and, on a total (the target times a quantity), the unit without its "per" part."""
    item = _prediction_schema(openapi)
    details = info.get("details") or {}
    target = str(details.get("target", ""))
    unit = str(details.get("unit", ""))
    fields = []
    for name, raw in (item.get("properties") or {}).items():
        spec = _resolve(openapi, raw)
        if name == WARNINGS_FIELD or _types(spec) - {"number", "integer"}:
            continue
        field_unit = unit if name == target else _total_unit(unit, spec)
        fields.append(AnswerField(name, str(spec.get("title") or _title(name)), field_unit))
    fields.sort(key=lambda field: field.name != target)
    if not fields:
        raise SchemaError("the server's POST /predict answers no numbers this page can show")
    return fields


def rows_per_request(openapi: dict[str, Any], info: dict[str, Any]) -> int:
    """How many rows one request may carry: ``/info``'s ``max_rows``, else the body's
    ``maxItems``, else one row at a time."""
    limit = (info.get("details") or {}).get("max_rows")
    if isinstance(limit, int) and limit > 0:
        return limit
    schema = _resolve(openapi, _request_body(openapi).get("schema", {}))
    for variant in [schema, *(_resolve(openapi, v) for v in _variants(schema))]:
        if variant.get("type") == "array" and isinstance(variant.get("maxItems"), int):
            return max(1, int(variant["maxItems"]))
    return 1


def row_from_values(fields: list[FormField], values: list[Any]) -> dict[str, Any]:
    """What the form holds (text, as typed) -> one JSON row of the values the schema asks for.
    Empty fields are left out: an optional one is then missing, a required one gets the
    server's "Field required"."""
    row: dict[str, Any] = {}
    for field, text in zip(fields, values, strict=True):
        value = value_from_text(field, "" if text is None else str(text))
        if value is not None:
            row[field.name] = value
    return row


def value_from_text(field: FormField, text: str) -> Any:
    """One cell of a CSV or an example file as the JSON value of ``field``: a number for a
    numeric field when it reads as one (else the text, which the server refuses by name), None
    for an empty cell."""
    text = text.strip()
    if not text:
        return None
    if field.kind in ("number", "integer"):
        try:
            number = float(text)
        except ValueError:
            return text
        if not math.isfinite(number):
            return text
        return int(number) if field.kind == "integer" and number.is_integer() else number
    return text


def answer_markdown(fields: list[AnswerField], prediction: dict[str, Any]) -> str:
    """One prediction as the page's answer: each number with its unit, one per line."""
    lines = []
    for field in fields:
        value = prediction.get(field.name)
        shown = number_text(value) if isinstance(value, int | float) else "n/a"
        unit = f" {field.unit}" if field.unit else ""
        lines.append(f"**{field.title}:** {shown}{unit}")
    return "\n\n".join(lines)


def first_prediction(body: Any) -> dict[str, Any] | None:
    """The one prediction of a one-row answer; None for an answer of another shape."""
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if isinstance(predictions, list) and predictions and isinstance(predictions[0], dict):
        return predictions[0]
    return None


def warnings_markdown(prediction: dict[str, Any]) -> str:
    """The server's notes on the row (empty when it had none)."""
    notes = prediction.get(WARNINGS_FIELD) or []
    return "\n".join(f"⚠️ {note}" for note in notes)


def number_text(value: float) -> str:
    """Thousands separated; decimals only where the number has them (2 at most)."""
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _request_body(openapi: dict[str, Any]) -> dict[str, Any]:
    try:
        body = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    except (KeyError, TypeError):
        raise SchemaError("the server's POST /predict takes no JSON body") from None
    return body if isinstance(body, dict) else {}


def _row_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    schema = _resolve(openapi, _request_body(openapi).get("schema", {}))
    for variant in [schema, *(_resolve(openapi, v) for v in _variants(schema))]:
        row = _resolve(openapi, variant.get("items")) if variant.get("type") == "array" else variant
        if "properties" in row:
            return row
    raise SchemaError("the server's POST /predict does not take rows of named fields")


def _prediction_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    try:
        response = openapi["paths"]["/predict"]["post"]["responses"]["200"]
        schema = _resolve(openapi, response["content"]["application/json"]["schema"])
        predictions = _resolve(openapi, schema["properties"]["predictions"])
        return _resolve(openapi, predictions["items"])
    except (KeyError, TypeError):
        raise SchemaError("the server's POST /predict answers no list of predictions") from None


def _form_field(name: str, spec: dict[str, Any], required: bool) -> FormField:
    variants = [v for v in [spec, *_variants(spec)] if v.get("type") not in (None, "null")]
    types = {v["type"] for v in variants}
    numeric = next((v for v in variants if v["type"] in ("number", "integer")), {})
    kind: Kind
    if any(v.get("format") == "date" for v in variants):
        kind = "date"
    elif "string" in types:
        kind = "text"  # a categorical field: its values may be numbers or text
    elif "number" in types:
        kind = "number"
    elif "integer" in types:
        kind = "integer"
    else:
        kind = "text"
    choices = [spec.get("examples"), *(v.get("examples") for v in variants)]
    known = next((c for c in choices if isinstance(c, list) and c), [])
    return FormField(
        name=name,
        title=str(spec.get("title") or _title(name)),
        kind=kind,
        required=required,
        description=str(spec.get("description") or numeric.get("description") or ""),
        minimum=_bound(numeric.get("minimum")) if kind != "text" else None,
        maximum=_bound(numeric.get("maximum")) if kind != "text" else None,
        choices=tuple(str(value) for value in known) if kind == "text" else (),
    )


def _variants(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in spec.get("anyOf", spec.get("oneOf", [])) if isinstance(v, dict)]


def _types(spec: dict[str, Any]) -> set[str]:
    return {str(v.get("type")) for v in [spec, *_variants(spec)] if "type" in v}


def _resolve(openapi: dict[str, Any], spec: Any) -> dict[str, Any]:
    """``spec`` with a local ``$ref`` (``#/components/schemas/Name``) followed."""
    if not isinstance(spec, dict):
        return {}
    reference = spec.get("$ref")
    if not isinstance(reference, str) or not reference.startswith("#/"):
        return spec
    target: Any = openapi
    for part in reference[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return _resolve(openapi, target)


def _bound(value: Any) -> float | None:
    if isinstance(value, int | float) and abs(value) < _UNBOUNDED:
        return float(value)
    return None


def _total_unit(unit: str, spec: dict[str, Any]) -> str:
    """A total is the target times the quantity its unit is per ("price_per_m2 x area_m2"):
    "DKK/m2" becomes "DKK"; a field that is no such product gets no unit."""
    if "/" not in unit or " x " not in str(spec.get("description", "")):
        return ""
    return unit.split("/", 1)[0].strip()


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()
