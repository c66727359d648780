"""What the image server writes as a prediction's ``outputs`` in the prediction log, and how the
monitor reads it back: one definition for the server, the drift features and realised accuracy.

* A multi-class model logs the response's ``top`` list (most probable class first).
* A two-class model with a decision threshold logs ``{"top": [...], "decision": {...}}``: the
  same list and the served decision (:func:`.binary.binary_decisions`). Its *answer* is the
  decision's label, which differs from the most probable class whenever the threshold is not 0.5,
  so realised accuracy scores the decision, against the evaluation's accuracy at the threshold.

Logs written before two-class decisions were logged hold the bare list; both shapes are read.
Anything malformed reads as None, never an exception: the monitor reads whatever the log holds.
numpy-free and torch-free.
"""

from collections.abc import Mapping, Sequence
from typing import Any

TOP_KEY = "top"
DECISION_KEY = "decision"


def logged_outputs(
    top: Sequence[Mapping[str, Any]], decision: Mapping[str, Any] | None
) -> list[dict[str, Any]] | dict[str, Any]:
    """The ``outputs`` to log for one image: the ``top`` list, with the decision when there is
    one."""
    ranked = [dict(entry) for entry in top]
    if decision is None:
        return ranked
    return {TOP_KEY: ranked, DECISION_KEY: dict(decision)}


def logged_top(outputs: Any) -> Mapping[str, Any] | None:
    """The most probable class's entry (``label``, ``probability``) of logged ``outputs``."""
    ranked = outputs.get(TOP_KEY) if isinstance(outputs, Mapping) else outputs
    if isinstance(ranked, list) and ranked and isinstance(ranked[0], Mapping):
        return ranked[0]
    return None


def answered_label(outputs: Any) -> str | None:
    """The class the server answered: the decision's label when a decision was logged, else the
    most probable class."""
    if isinstance(outputs, Mapping):
        decision = outputs.get(DECISION_KEY)
        if isinstance(decision, Mapping):
            label = decision.get("label")
            return label if isinstance(label, str) else None
    top = logged_top(outputs)
    label = top.get("label") if top is not None else None
    return label if isinstance(label, str) else None
