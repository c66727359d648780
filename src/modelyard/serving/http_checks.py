"""Request parsing and checks shared by task routes: clear 4xx answers before any model work.

The hot routes read the body themselves: pydantic validates the JSON bytes in one pass (no
intermediate Python objects), and the answer is written with orjson straight from numpy arrays.
Both are cheaper per request than FastAPI's generic body and response handling (found by
profiling the serving benchmark's server), while the OpenAPI schema still documents both models.
"""

from typing import Any, TypeVar

import orjson
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


async def require_json(request: Request) -> None:
    """Dependency form of :func:`check_json`."""
    check_json(request)


def check_json(request: Request) -> None:
    """Refuse bodies that are not declared as JSON with 415, instead of a confusing 422."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            status_code=415,
            detail=f"expected Content-Type: application/json, got {content_type or 'none'!r}",
        )


async def parse_json_body(request: Request, model: type[Model]) -> Model:
    """The body validated as ``model``; errors are 422s located under ``body`` as FastAPI's."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise RequestValidationError(errors) from None


def json_response(content: dict[str, Any]) -> Response:
    """JSON with numpy arrays serialised natively (no Python list per value)."""
    return Response(
        orjson.dumps(
            content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
        ),
        media_type="application/json",
    )


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the JSON request body of a raw-body route."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
