"""``GET /examples`` and ``GET /examples/{name}``: the example inputs shipped with the bundle.

The list is the manifest's (name, media type, description; an empty list for a bundle exported
before examples existed). A file is looked up by its name in that list only, never by building a
path from the request, and verified against its recorded sha256 before it is sent; any other
name is a 404 with a sentence. Both answer with the model served now (``serve --follow`` may
replace it) and, like ``/info``, need an API key when keys are on (:mod:`.auth`).
"""

import logging

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelyard.core.bundle import Bundle
from modelyard.core.errors import BundleError
from modelyard.serving.http_checks import ErrorBody, error_responses

log = logging.getLogger("modelyard.serving")


class Example(BaseModel):
    name: str = Field(examples=["AnnualCrop-AnnualCrop_1234.jpg"])
    media_type: str = Field(examples=["image/jpeg"])
    description: str


class Examples(BaseModel):
    """The bundle's example inputs, each downloadable at ``/examples/{name}``."""

    examples: list[Example]


def served_bundle(request: Request) -> Bundle:
    """The bundle of the model the app serves now."""
    return request.app.state.service.served.bundle  # type: ignore[no-any-return]


def examples_router() -> APIRouter:
    """The two routes, over the bundle served when a request comes."""
    router = APIRouter(tags=["service"])

    @router.get("/examples", response_model=Examples)
    async def list_examples(request: Request) -> Examples:
        """Example inputs shipped with the bundle (a day of mains, test images, table rows)."""
        records = served_bundle(request).manifest.examples
        return Examples(
            examples=[
                Example(name=r.name, media_type=r.media_type, description=r.description)
                for r in records
            ]
        )

    @router.get(
        "/examples/{name}",
        response_class=Response,
        responses={
            200: {
                "description": "The example file, with its media type",
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **error_responses({404: "No example of that name"}),
            500: {"description": "The example file changed after loading", "model": ErrorBody},
        },
    )
    async def get_example(name: str, request: Request) -> Response:
        """One example file, as listed by ``GET /examples``."""
        bundle = served_bundle(request)
        try:
            found = bundle.example(name)
        except BundleError as exc:  # changed on disk since the bundle was loaded
            log.error("%s", exc)
            sentence = f"example {name!r} changed on the server since the bundle was loaded"
            return JSONResponse({"detail": sentence}, 500)
        if found is None:
            listed = ", ".join(r.name for r in bundle.manifest.examples) or "none"
            raise HTTPException(
                404, f"the bundle has no example named {name[:100]!r} (examples: {listed})"
            )
        record, data = found
        return Response(data, media_type=record.media_type)

    return router
