"""Ground truth for logged predictions: the ``prediction_feedback`` table that ``POST /feedback``
fills, joined to the window's predictions on the server-generated request id.

The table is the server's (``serving/log_schema.py``). When a truth was sent twice for one
prediction the latest one (the highest id, i.e. the last written) counts.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelyard.monitoring.window import as_utc
from modelyard.serving.log_schema import FEEDBACK_TABLE, feedback, predictions


@dataclass(frozen=True)
class Truth:
    """A logged prediction's outputs with the latest truth sent for it."""

    created_at: datetime
    outputs: Any
    truth: Any


def has_feedback(connection: Connection) -> bool:
    return sa.inspect(connection).has_table(FEEDBACK_TABLE)


def read_truths(
    connection: Connection, window_conditions: list[sa.ColumnElement[bool]]
) -> Iterator[Truth]:
    """The predictions matching ``window_conditions`` that have feedback, with their truth."""
    latest = (
        sa.select(feedback.c.server_request_id, sa.func.max(feedback.c.id).label("feedback_id"))
        .group_by(feedback.c.server_request_id)
        .subquery()
    )
    query = (
        sa.select(predictions.c.created_at, predictions.c.outputs, feedback.c.truth)
        .select_from(predictions)
        .join(latest, latest.c.server_request_id == predictions.c.server_request_id)
        .join(feedback, feedback.c.id == latest.c.feedback_id)
        .where(*window_conditions)
        .order_by(predictions.c.id)
    )
    for row in connection.execution_options(yield_per=5_000).execute(query):
        yield Truth(as_utc(row.created_at), row.outputs, row.truth)
