"""What the image page shows, as plain data: the server's top-k answer turned into the chart's
values, the top class as a sentence and the exact probabilities as a table; the examples a bundle
ships; the upload note from ``/info``. No Gradio here, so all of it is unit-tested without a
browser.

The page sends the file's own bytes: the server's decoding checks (format, size, decompression
bombs) must judge the real upload, so nothing here opens or converts an image.
"""

import mimetypes
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from modelyard.webui.metrics_table import escape

#: Sent when the file name says nothing about the type; the server judges the bytes anyway.
UNKNOWN_MEDIA_TYPE = "application/octet-stream"
#: Characters Markdown would read as markup in a class or file name (PlantVillage's classes are
#: ``Potato___Early_blight``; a label could hold ``|``, which would split a table cell).
#: Media types the example picker offers (a bundle's examples are image files for vision).
IMAGE_MEDIA_PREFIX = "image/"


@dataclass(frozen=True)
class ClassProbability:
    label: str
    probability: float


@dataclass(frozen=True)
class Decision:
    """A two-class model's thresholded answer (the ``decision`` block of ``POST /predict``)."""

    label: str
    positive_class: str
    positive_probability: float
    threshold: float
    is_positive: bool

    @classmethod
    def from_answer(cls, block: Any) -> "Decision":
        try:
            return cls(
                label=str(block["label"]),
                positive_class=str(block["positive_class"]),
                positive_probability=float(block["positive_probability"]),
                threshold=float(block["threshold"]),
                is_positive=bool(block["is_positive"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"The server's answer has a malformed decision: {error}.") from None


@dataclass(frozen=True)
class Classified:
    """One answer of ``POST /predict``: the classes, most probable first, what was sent and, for
    a two-class model, the decision at the bundle's threshold."""

    top: tuple[ClassProbability, ...]
    filename: str
    sent_bytes: int
    decision: Decision | None = None

    @classmethod
    def from_answer(cls, body: Any, filename: str, sent_bytes: int) -> "Classified":
        """The answer's ``top`` list; a body without one is a sentence, not a KeyError."""
        rows = body.get("top") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not rows:
            raise ValueError("The server's answer has no classes (no 'top' list).")
        try:
            top = tuple(ClassProbability(str(r["label"]), float(r["probability"])) for r in rows)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"The server's answer has a malformed class: {error}.") from None
        block = body.get("decision")
        decision = None if block is None else Decision.from_answer(block)
        return cls(top=top, filename=filename, sent_bytes=sent_bytes, decision=decision)

    def chart(self) -> dict[str, float]:
        """The bar chart's values (gr.Label): class -> probability."""
        return {row.label: row.probability for row in self.top}

    def headline(self) -> str:
        """The most probable class as one line of Markdown; for a two-class model the decision
        at the threshold instead, with the comparison that made it."""
        if self.decision is not None:
            d = self.decision
            side = "≥" if d.is_positive else "<"
            return (
                f"### {escape(d.label)}\n\n{escape(d.positive_class)}: "
                f"{percent(d.positive_probability)} {side} threshold {percent(d.threshold)}"
            )
        best = self.top[0]
        return f"### {escape(best.label)} · {percent(best.probability)}"

    def table(self) -> str:
        """Every returned class with the probability exactly as the server sent it."""
        lines = ["| class | probability |", "|---|---|"]
        lines += [f"| {escape(r.label)} | {r.probability!r} |" for r in self.top]
        return "\n".join(lines)

    def sent_note(self) -> str:
        """Which file was classified and how many bytes went to the server (unchanged)."""
        return f"Sent {escape(self.filename)} ({self.sent_bytes:,} bytes, as uploaded)."


def percent(probability: float) -> str:
    return f"{probability * 100:.1f} %"


def media_type(filename: str) -> str:
    """The upload's declared type, from its name (the server decides from the bytes)."""
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or UNKNOWN_MEDIA_TYPE


@dataclass(frozen=True)
class Example:
    """A file shipped with the bundle, served by ``GET /examples/{name}``."""

    name: str
    media_type: str
    description: str

    def choice(self) -> tuple[str, str]:
        """(what the picker shows, the value it returns)."""
        return (f"{self.description} ({self.name})" if self.description else self.name, self.name)


def image_examples(listing: Any) -> list[Example]:
    """The image files of a ``GET /examples`` answer; anything malformed is left out, so an odd
    server costs the picker, never the page."""
    entries = listing.get("examples") if isinstance(listing, dict) else None
    if not isinstance(entries, list):
        return []
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name, kind = entry.get("name"), entry.get("media_type")
        if not isinstance(name, str) or not is_plain_name(name):
            continue
        if not isinstance(kind, str) or not kind.startswith(IMAGE_MEDIA_PREFIX):
            continue
        description = entry.get("description")
        found.append(Example(name, kind, description if isinstance(description, str) else ""))
    return found


def is_plain_name(name: str) -> bool:
    """A file name without a directory part: it becomes a local file name and a URL segment."""
    return (
        bool(name) and PurePath(name).name == name and name not in (".", "..") and "/" not in name
    )


def upload_note(details: dict[str, Any]) -> str:
    """What the server accepts, from ``/info``'s ``details`` (its own limits, not the UI's)."""
    parts = ["JPEG or PNG"]
    limit = details.get("max_upload_bytes")
    if isinstance(limit, int) and limit > 0:
        parts.append(f"up to {megabytes(limit)}")
    classes = details.get("classes")
    count = f" among {len(classes)} classes" if isinstance(classes, list) and classes else ""
    top_k = details.get("top_k")
    shown = f"the {top_k} most probable" if isinstance(top_k, int) else "the most probable"
    return f"Upload, drop or pick an image ({', '.join(parts)}); the page shows {shown}{count}."


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:g} MB"
