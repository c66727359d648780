"""Request parsing and checks shared by task routes: clear 4xx answers before any model work.

The JSON routes read the body themselves: pydantic validates the JSON bytes in one pass (no
intermediate Python objects), and the answer is written with orjson straight from numpy arrays.
Both are cheaper per request than FastAPI's generic body and response handling (found by
profiling the serving benchmark's server), while the OpenAPI schema still documents both models.

Validation cost is bounded before pydantic sees a body. pydantic-core first parses the whole
document into a tree and only then applies ``max_length``, so a declared limit alone does not
bound what a list of millions of items costs. So each route declares :class:`BodyLimits`, derived
from its request model's own limits, and :func:`parse_json_body` checks them on the raw bytes
with a few C-speed passes: the byte size (413), then how many objects, arrays, strings and commas
the document holds outside its strings (422). A document within those counts has a tree at most
about twice the size of the largest valid request's, so parsing and validating it takes
milliseconds; bodies above :data:`THREAD_ABOVE_BYTES` are counted and validated in a worker
thread, so that even those milliseconds do not hold up the event loop (``/health`` included).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

Parsed = TypeVar("Parsed")

#: Validation errors reported in one 422 (the rest are counted in ``error_count``).
MAX_REPORTED_ERRORS = 20
#: Longest message or location part echoed back: inputs are never echoed, but an unknown
#: field's name is part of its location and may be as long as the body.
MAX_ERROR_TEXT = 200
#: Bodies larger than this are counted and validated in a worker thread, so that the largest
#: valid bodies (1000 tabular rows of 100-character texts are 4.9 MB) do not hold the event
#: loop while they are validated. Smaller bodies stay on the loop, where they cost less than
#: the thread hop.
THREAD_ABOVE_BYTES = 64 * 1024
_MARGIN = 2
_SLACK = 16


class FieldError(BaseModel):
    """One validation error: where (``body``, field, index...), what, and pydantic's type."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx: a sentence, or a list of field errors (at most 20, counted in error_count)."""

    detail: str | list[FieldError]
    error_count: int | None = Field(
        default=None, description="Number of field errors, when more than reported."
    )


@dataclass(frozen=True)
class BodyLimits:
    """The most a valid JSON body of one route can hold, counted on its raw bytes.

    ``max_bytes`` bytes, ``max_containers`` objects and arrays, ``max_strings`` strings (keys
    included) and ``max_separators`` commas outside strings. ``too_many`` is the 422's sentence
    for a body far over the counts, in the route's terms ("... than 1000 rows").
    """

    max_bytes: int
    max_containers: int
    max_strings: int
    max_separators: int
    too_many: str


@dataclass(frozen=True)
class LengthError:
    """The 422 sentence for a wrong number of items in the list at ``at`` (``()``: the body)."""

    at: tuple[str | int, ...]
    sentence: Callable[[int], str]


def check_json(request: Request) -> None:
    """Refuse bodies that are not declared as JSON with 415, instead of a confusing 422."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            status_code=415,
            detail=f"expected Content-Type: application/json, got {clip(content_type) or 'none'!r}",
        )


async def read_json_bytes(request: Request, limits: BodyLimits) -> bytes:
    """The body, refused with 413 above ``limits.max_bytes`` (declared or read)."""
    too_large = f"request body larger than {limits.max_bytes} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise HTTPException(413, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():  # a chunked body is cut off at the limit
        size += len(chunk)
        if size > limits.max_bytes:
            raise HTTPException(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def check_structure(body: bytes, limits: BodyLimits) -> None:
    """422 when ``body`` holds far more objects, arrays, strings or commas than ``limits`` allow.

    Up to twice the counts pass, so that a body a little over a limit is refused by pydantic
    with the exact count ("got 1001 rows"), at no more than twice a valid body's cost.

    Escapes go first (``\\\\`` then ``\\"``, the order a JSON reader resolves them), so every
    quote left delimits a string; the bytes outside strings are then counted. A body that is not
    JSON may be counted wrongly, but the parser refuses it at its first error anyway.
    """
    plain = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body
    if plain.count(b'"') <= 2 * _MARGIN * limits.max_strings + _SLACK:
        outside = b"".join(plain.split(b'"')[::2]) if b'"' in plain else plain
        containers = outside.count(b"{") + outside.count(b"[")
        separators = outside.count(b",")
        if (
            containers <= _MARGIN * limits.max_containers + _SLACK
            and separators <= _MARGIN * limits.max_separators + _SLACK
        ):
            return
    raise HTTPException(422, limits.too_many)


async def parse_json_body(
    request: Request,
    adapter: TypeAdapter[Parsed],
    limits: BodyLimits,
    length_error: LengthError | None = None,
) -> Parsed:
    """The body, within ``limits``, validated by ``adapter`` (see :func:`validate_json_body`);
    a large body in a worker thread."""
    body = await read_json_bytes(request, limits)
    if len(body) <= THREAD_ABOVE_BYTES:
        return validate_json_body(body, adapter, limits, length_error)
    return await run_in_threadpool(validate_json_body, body, adapter, limits, length_error)


def validate_json_body(
    body: bytes,
    adapter: TypeAdapter[Parsed],
    limits: BodyLimits,
    length_error: LengthError | None = None,
) -> Parsed:
    """``body`` counted against ``limits``, then validated by ``adapter``. Errors are 422s
    located under ``body`` as FastAPI's, except a wrong length of the list that ``length_error``
    names: that one gets its sentence."""
    check_structure(body, limits)
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=True)
        for error in errors:
            wrong_length = error["type"] in ("too_short", "too_long")
            if length_error and wrong_length and error["loc"] == length_error.at:
                count = int((error.get("ctx") or {}).get("actual_length", -1))
                raise HTTPException(422, length_error.sentence(count)) from None
        raise RequestValidationError(
            [
                {"loc": ("body", *error["loc"]), "msg": error["msg"], "type": error["type"]}
                for error in errors
            ]
        ) from None


def clip(text: str) -> str:
    """``text`` cut to :data:`MAX_ERROR_TEXT` characters (marked with an ellipsis)."""
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def validation_error_body(errors: Sequence[Any]) -> dict[str, Any]:
    """The 422 body for ``errors``: the first :data:`MAX_REPORTED_ERRORS`, short, no inputs."""
    reported = [
        {
            "loc": [p if isinstance(p, int) else clip(str(p)) for p in e.get("loc", ())],
            "msg": clip(str(e.get("msg", ""))),
            "type": clip(str(e.get("type", ""))),
        }
        for e in errors[:MAX_REPORTED_ERRORS]
    ]
    body: dict[str, Any] = {"detail": reported}
    if len(errors) > MAX_REPORTED_ERRORS:
        body["error_count"] = len(errors)
    return body


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses`` for a route: each 4xx status with its description and :class:`ErrorBody`."""
    return {
        status: {"description": text, "model": ErrorBody} for status, text in descriptions.items()
    }


def json_response(content: dict[str, Any]) -> Response:
    """JSON with numpy arrays serialised natively (no Python list per value)."""
    return Response(
        orjson.dumps(
            content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
        ),
        media_type="application/json",
    )


def json_body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``schema`` (a pydantic JSON schema) as the JSON request body
    of a raw-body route; its ``$defs`` are inlined, as openapi_extra is not rewritten."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_definitions(schema)}},
        }
    }


def inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``{"$ref": "#/$defs/Name"}`` replaced by the definition (the request
    models are not recursive)."""
    definitions = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
