"""The feedback log: ground truth for logged predictions, stored beside them, losing nothing.

A client that learns the truth about a prediction (the sale price, the image's class, the
appliance's metered power) sends it to ``POST /feedback`` (:mod:`.feedback_api`) with the
prediction's id, the ``X-Prediction-ID`` header of its answer. Each accepted truth becomes a
:class:`FeedbackRecord`, written to the ``prediction_feedback`` table by a
:class:`~modelyard.serving.prediction_log.RecordLog`: the prediction log's own machinery
(buffer, spool owned by database, model and table, dead letters, replay, drain on shutdown).

A truth is checked against its prediction when it arrives (:meth:`FeedbackDesk.lookup`: the
prediction log's memory, its spool, then the database). When the database cannot be reached the
truth is accepted unchecked (``checked`` false) and checked when it is written: one that does
not fit its logged prediction then becomes a dead letter; one whose prediction is still not in
the database is stored all the same (the prediction may yet arrive from another worker's spool;
the monitor's join pairs them whenever it does).

This module imports no torch; it is part of the server.
"""

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelyard.serving.dead_letters import DeadLetter
from modelyard.serving.log_json import to_json
from modelyard.serving.log_schema import feedback, predictions
from modelyard.serving.prediction_log import PredictionLog, RecordLog

#: ``truth_mismatch`` of the served adapter: a sentence when a truth does not fit a prediction.
TruthCheck = Callable[[dict[str, Any], Any, Any], str | None]
_LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class FeedbackRecord:
    #: the feedback request's X-Request-ID (names the record in logs and dead letters)
    request_id: str
    #: the prediction's server-generated id (``predictions.server_request_id``)
    server_request_id: str
    model: str
    truth: Any
    #: the prediction was found and the truth fitted it when the feedback arrived
    checked: bool
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        return {
            "server_request_id": self.server_request_id,
            "received_at": self.received_at,
            "model": self.model,
            "truth": self.truth,
        }

    def to_json(self) -> str:
        """One spool line; never fails (see log_json)."""
        return to_json(
            self.row()
            | {
                "request_id": self.request_id,
                "checked": self.checked,
                "received_at": self.received_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, line: str) -> "FeedbackRecord":
        """A spool line back into a record (ValueError, TypeError or KeyError when it is not)."""
        raw = json.loads(line)
        for name in ("request_id", "server_request_id", "model"):
            if not isinstance(raw[name], str):
                raise TypeError(f"{name} is a {type(raw[name]).__name__}")
        if not isinstance(raw["checked"], bool):
            raise TypeError("checked is not a boolean")
        return cls(
            request_id=raw["request_id"],
            server_request_id=raw["server_request_id"],
            model=raw["model"],
            truth=raw["truth"],
            checked=raw["checked"],
            received_at=datetime.fromisoformat(raw["received_at"]),
        )

    def dead_letter(self, error: BaseException | str) -> DeadLetter:
        return DeadLetter.of(
            error, self.to_json(), self.request_id, self.server_request_id, self.received_at,
            self.model,
        )  # fmt: skip


@dataclass(frozen=True)
class LoggedPrediction:
    """What a truth is checked against: the logged prediction's model, inputs and outputs."""

    model: str
    inputs: Any
    outputs: Any


class TruthRefusedError(ValueError):
    """A truth that does not fit its logged prediction: a dead letter, not a retry."""


def logged_predictions(connection: Connection, ids: Collection[str]) -> dict[str, LoggedPrediction]:
    """The predictions in the database among ``ids``, by server id."""
    wanted = sorted(set(ids))
    found: dict[str, LoggedPrediction] = {}
    columns = (predictions.c.server_request_id, predictions.c.model, predictions.c.inputs,
               predictions.c.outputs)  # fmt: skip
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        query = sa.select(*columns).where(predictions.c.server_request_id.in_(chunk))
        for server_id, model, inputs, outputs in connection.execute(query):
            found[str(server_id)] = LoggedPrediction(str(model), inputs, outputs)
    return found


def refusal(
    record_model: str, truth: dict[str, Any], logged: LoggedPrediction, check: TruthCheck
) -> str | None:
    """Why a truth cannot go with a logged prediction (another model's, or not fitting it)."""
    if logged.model != record_model:
        return f"the prediction belongs to model {logged.model!r}, not {record_model!r}"
    return check(truth, logged.inputs, logged.outputs)


class FeedbackLog(RecordLog[FeedbackRecord]):
    """Feedback records into ``prediction_feedback``; the unchecked ones checked on the way."""

    def __init__(self, url: str, spool_dir: Path, check: TruthCheck, **options: Any) -> None:
        super().__init__(url, spool_dir, feedback, FeedbackRecord.from_json, "feedback log",
                         **options)  # fmt: skip
        self.check = check

    def logged(self, ids: Collection[str]) -> dict[str, LoggedPrediction]:
        """The predictions in the database among ``ids``; raises when it cannot be read, even
        for no ids (the connection is opened and, on PostgreSQL, pinged)."""
        with self._engine.connect() as connection:
            try:
                return logged_predictions(connection, ids)
            except sa.exc.DBAPIError:
                connection.rollback()
                if sa.inspect(connection).has_table(predictions.name):
                    raise
                return {}  # no prediction written yet: reachable, and none is known

    def _insert(self, records: Sequence[FeedbackRecord]) -> None:
        """Check the records accepted while the database was away, then insert all of them; a
        refused one fails the batch, which is then stored row by row (it becomes a dead
        letter)."""
        unchecked = [r for r in records if not r.checked]
        if unchecked:
            found = self.logged([r.server_request_id for r in unchecked])
            for record in unchecked:
                logged = found.get(record.server_request_id)
                reason = logged and refusal(record.model, record.truth, logged, self.check)
                if reason:
                    raise TruthRefusedError(f"feedback does not fit its prediction: {reason}")
        super()._insert(records)


class FeedbackDesk:
    """Where ``POST /feedback`` looks for the predictions it is sent truths for."""

    def __init__(self, log: FeedbackLog, predictions_log: PredictionLog) -> None:
        self.log = log
        self.predictions_log = predictions_log

    def unwritten(self, ids: Collection[str]) -> dict[str, LoggedPrediction]:
        """Predictions of this process not yet in the database (memory, then spool)."""
        return {
            server_id: LoggedPrediction(record.model, record.inputs, record.outputs)
            for server_id, record in self.predictions_log.unwritten(ids).items()
        }
