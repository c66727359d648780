"""``POST /feedback``: ground truth for a logged prediction, validated by the family's adapter.

The body is one item ``{"prediction_id": ID, "truth": TRUTH}`` or a list of up to
:data:`MAX_ITEMS` of them; ``ID`` is the ``X-Prediction-ID`` header of the prediction's answer,
``TRUTH`` the family's truth (:meth:`~modelyard.serving.adapter.ServingAdapter.truth_model`).
A body is taken or refused whole:

* 422: a truth of the wrong type or shape, or one that does not fit its prediction (another
  number of rows or readings); the sentence names the item, never echoes the input;
* 404: an id that is not a prediction of this model: not in the database, nor in this worker's
  memory or spool of records not yet written;
* 200: every item found and fitting; written to ``prediction_feedback`` within the log's flush
  interval;
* 202: the database is unreachable (or the look-up took over :data:`LOOKUP_TIMEOUT_S`): the
  items are kept (buffer, then spool) and written, and checked against their predictions where
  that could not be done now, once it is back.

Each item is counted in ``modelyard_feedback_records_total{outcome}`` under the outcome of its
body (accepted, deferred, unknown_id, invalid; a body that cannot be read counts as one).
"""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model
from starlette.concurrency import run_in_threadpool

from modelyard.serving.adapter import ServingAdapter
from modelyard.serving.context import current_request
from modelyard.serving.dead_letters import is_database_down
from modelyard.serving.feedback import FeedbackDesk, FeedbackRecord, LoggedPrediction, refusal
from modelyard.serving.http_checks import (
    THREAD_ABOVE_BYTES,
    BodyLimits,
    LengthError,
    check_json,
    error_responses,
    json_body_schema,
    read_json_bytes,
    validate_json_body,
)
from modelyard.serving.metrics import ServiceMetrics

#: Most items in one body (a batch upload of truths).
MAX_ITEMS = 1000
#: How long finding the predictions (memory, spool, database) may take; beyond, the database
#: counts as unreachable (the items are accepted with 202 and checked when written).
LOOKUP_TIMEOUT_S = 3.0
PredictionId = Annotated[
    str,
    Field(
        pattern="^[0-9a-f]{32}$",
        description="The X-Prediction-ID header of the prediction's answer (32 hex digits).",
    ),
]
_ITEM_BYTES = 256


class FeedbackAnswer(BaseModel):
    detail: str = Field(description="What happened to the feedback, in a sentence.")
    records: int = Field(description="Feedback records accepted.")
    checked: int = Field(description="Of those, checked against their prediction already.")


class FeedbackParser:
    """The body model and limits of one adapter's feedback."""

    def __init__(self, adapter: ServingAdapter) -> None:
        truth = adapter.truth_model()
        one = adapter.truth_limits()
        if truth is None or one is None:
            raise ValueError("this family takes no feedback")
        self.adapter = adapter
        self.Item = create_model(
            "Feedback",
            __config__=ConfigDict(extra="forbid"),
            prediction_id=(PredictionId, ...),
            truth=(truth, ...),
        )
        self.items_type: Any = Annotated[
            list[self.Item],  # type: ignore[name-defined]
            Field(min_length=1, max_length=MAX_ITEMS),
        ]
        self.item_adapter: TypeAdapter[BaseModel] = TypeAdapter(self.Item)
        self.items_adapter: TypeAdapter[list[BaseModel]] = TypeAdapter(
            self.items_type  # type: ignore[arg-type]
        )
        self.limits = BodyLimits(
            max_bytes=MAX_ITEMS * (one.max_bytes + _ITEM_BYTES),
            max_containers=MAX_ITEMS * (one.max_containers + 1) + 1,
            max_strings=MAX_ITEMS * (one.max_strings + 3),
            max_separators=MAX_ITEMS * (one.max_separators + 2),
            too_many=f"the body holds far more values than {MAX_ITEMS} feedback items",
        )
        self.length_error = LengthError(
            (), lambda n: f"send between 1 and {MAX_ITEMS} feedback items, got {n}"
        )

    def schema(self) -> dict[str, Any]:
        return TypeAdapter(self.Item | self.items_type).json_schema()

    def parse(self, body: bytes) -> list[tuple[str, dict[str, Any]]]:
        """(prediction id, truth as JSON) per item; 422 (HTTPException or a validation error)."""
        if body.lstrip()[:1] == b"[":
            items = validate_json_body(body, self.items_adapter, self.limits, self.length_error)
        else:
            items = [validate_json_body(body, self.item_adapter, self.limits)]
        return [
            (
                str(getattr(item, "prediction_id")),  # noqa: B009 (a created model's field)
                getattr(item, "truth").model_dump(mode="json", exclude_none=True),  # noqa: B009
            )
            for item in items
        ]


class CurrentParser:
    """The parser of the adapter being served now: rebuilt when a new model version is swapped
    in (``serve --follow``), so that its classes or appliances decide what is valid."""

    def __init__(self, first: FeedbackParser) -> None:
        self.first = first
        self._current = first

    def of(self, adapter: ServingAdapter) -> FeedbackParser:
        current = self._current
        if current.adapter is not adapter:
            current = self._current = FeedbackParser(adapter)
        return current


def feedback_router(
    parser: FeedbackParser, desk: FeedbackDesk, metrics: ServiceMetrics
) -> APIRouter:
    """The ``POST /feedback`` route (see the module docstring); ``parser`` documents the body
    in the OpenAPI schema, the served adapter's validates it."""
    router = APIRouter(tags=["feedback"])
    counter = metrics.feedback
    parsers = CurrentParser(parser)

    @router.post(
        "/feedback",
        response_model=FeedbackAnswer,
        openapi_extra=json_body_schema(parser.schema()),
        responses={
            202: {
                "description": "Log database unreachable: stored for later, checked then",
                "model": FeedbackAnswer,
            },
            **error_responses(
                {
                    404: "An id that is not a prediction of this model",
                    413: "Body too large",
                    415: "Body is not JSON",
                    422: "A truth of the wrong type or shape, or not fitting its prediction",
                }
            ),
        },
    )
    async def post_feedback(request: Request) -> JSONResponse:
        """The truth about one prediction (or a list of them), for realised accuracy."""
        check_json(request)
        served = parsers.of(request.app.state.service.served.adapter)
        body = await read_json_bytes(request, served.limits)
        try:
            if len(body) <= THREAD_ABOVE_BYTES:
                items = served.parse(body)
            else:
                items = await run_in_threadpool(served.parse, body)
        except (HTTPException, RequestValidationError):
            counter.labels("invalid").inc()
            raise
        model = served.adapter.bundle.manifest.name
        found, reachable = await lookup(desk, [server_id for server_id, _ in items])
        try:
            check_items(items, found, reachable, model, served.adapter)
        except HTTPException as refused:
            counter.labels("unknown_id" if refused.status_code == 404 else "invalid").inc(
                len(items)
            )
            raise
        context = current_request.get()
        request_id = context.request_id if context is not None else ""
        for server_id, truth in items:
            desk.log.record(FeedbackRecord(request_id, server_id, model, truth, server_id in found))
        counter.labels("accepted" if reachable else "deferred").inc(len(items))
        return answer(len(items), sum(1 for i, _ in items if i in found), reachable)

    return router


def check_items(
    items: list[tuple[str, dict[str, Any]]],
    found: dict[str, LoggedPrediction],
    reachable: bool,
    model: str,
    adapter: ServingAdapter,
) -> None:
    """404 for an id that is not a prediction of ``model`` (when the database could tell);
    422 for a truth that does not fit its prediction."""
    mine = {i for i, logged in found.items() if logged.model == model}
    unknown = [i for i, _ in items if i not in mine and (reachable or i in found)]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise HTTPException(404, f"no prediction of model {model!r} has the id {unknown[0]}{more}")
    for index, (server_id, truth) in enumerate(items):
        logged = found.get(server_id)
        reason = logged and refusal(model, truth, logged, adapter.truth_mismatch)
        if reason:
            where = f"item {index}: " if len(items) > 1 else ""
            raise HTTPException(422, f"{where}{reason}")


def answer(records: int, checked: int, reachable: bool) -> JSONResponse:
    """200 (stored within the flush interval) or 202 (the database unreachable)."""
    detail = f"{records} feedback record(s) accepted"
    if not reachable:
        detail = (
            f"the log database is unreachable: {records} feedback record(s) stored for later; "
            "written, and checked against their predictions where that was not possible now, "
            "once it is back"
        )
    body = FeedbackAnswer(detail=detail, records=records, checked=checked)
    return JSONResponse(body.model_dump(), status_code=200 if reachable else 202)


async def lookup(desk: FeedbackDesk, ids: list[str]) -> tuple[dict[str, LoggedPrediction], bool]:
    """The predictions among ``ids`` (this worker's unwritten ones first, then the database),
    and whether the database could tell: False when it is down, or when the look-up (a large
    spool, a hung database) took over :data:`LOOKUP_TIMEOUT_S`; what is not found then is
    checked when it is written."""
    found: dict[str, LoggedPrediction] = {}
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            found = await run_in_threadpool(desk.unwritten, ids)
            rest = [i for i in ids if i not in found]
            # even with nothing left to look up: whether it is reachable decides 200 or 202
            found |= await run_in_threadpool(desk.log.logged, rest)
    except TimeoutError:
        return found, False
    except Exception as exc:
        if is_database_down(exc):
            return found, False
        raise
    return found, True
