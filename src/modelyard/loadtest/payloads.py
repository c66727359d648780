"""Realistic request bodies, built once from what the server says about itself (``GET /info``).

The builder is chosen by the served bundle's task family (``/info``'s ``task``), never by its
project: any project of a known family can be load-tested. Each builds variations of the
server's own example request (``details.example``, see :meth:`ServingAdapter.example_request`):

* NILM: the example's request with its series replaced by mains series drawn from a plausible
  household profile (base load following the time of day, a cycling fridge,
  kettle/microwave/washing-machine-like spikes, meter noise), seeded, one model window long by
  default (the example's length).
* Tabular: the example row with small seeded perturbations of its numeric fields, kept
  within the bounds the server's OpenAPI schema declares and in the example's own types.
* Vision: synthetic JPEGs (gradients, shapes, noise) at the model's image size, or real images
  from a folder, as ``multipart/form-data`` uploads in the example's field (``file``).

Every builder returns a few variants; the locustfile sends one at random per request. numpy and
Pillow only: no Locust here.
"""

import io
import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from modelyard.core.errors import ModelyardError, first_error
from modelyard.loadtest.options import IMAGE_SUFFIXES, LoadOptions, nilm_series_length
from modelyard.projects.nilm.contract import NilmRequestBounds

log = logging.getLogger("modelyard.loadtest")

VARIANTS = 16
MAX_IMAGES = 64
JSON_TYPE = "application/json"

#: (power W, shortest and longest run in minutes, runs per day) of appliance-like loads.
APPLIANCE_RUNS: tuple[tuple[float, float, float, float], ...] = (
    (2800.0, 2.0, 4.0, 5.0),  # kettle
    (1100.0, 1.0, 5.0, 3.0),  # microwave
    (2000.0, 10.0, 20.0, 0.7),  # washing machine heating
    (2000.0, 15.0, 25.0, 0.5),  # dishwasher heating
    (900.0, 2.0, 3.0, 1.0),  # toaster
)


@dataclass(frozen=True)
class Payload:
    """One request body, ready to send."""

    body: bytes
    content_type: str


# --- NILM --------------------------------------------------------------------------------------


def mains_profile(
    length: int, interval_s: int, rng: np.random.Generator, limit_w: float | None = None
) -> np.ndarray:
    """``length`` mains readings (W) every ``interval_s`` seconds from a random time of day."""
    step_min = interval_s / 60.0
    minutes = (rng.uniform(0.0, 1440.0) + np.arange(length) * step_min) % 1440.0
    evening = 160.0 * np.exp(-(((minutes - 19.5 * 60) / 100.0) ** 2))
    morning = 70.0 * np.exp(-(((minutes - 7.5 * 60) / 50.0) ** 2))
    series = rng.uniform(120.0, 260.0) + evening + morning
    period = rng.uniform(35.0, 55.0)
    fridge_on = ((minutes + rng.uniform(0.0, period)) % period) < 0.4 * period
    series = series + np.where(fridge_on, rng.uniform(70.0, 110.0), 0.0)
    series = series + appliance_runs(length, step_min, rng)
    series = series + rng.normal(0.0, 6.0, length)
    upper = None if limit_w is None or not math.isfinite(limit_w) else 0.95 * limit_w
    readings: np.ndarray = np.round(np.clip(series, 0.0, upper), 1)
    return readings


def appliance_runs(length: int, step_min: float, rng: np.random.Generator) -> np.ndarray:
    """Rectangular appliance runs placed at random; at least one per series."""
    load = np.zeros(length)
    days = length * step_min / 1440.0
    runs = [
        (power, low, high)
        for power, low, high, per_day in APPLIANCE_RUNS
        for _ in range(int(rng.poisson(per_day * days)))
    ]
    if not runs:
        power, low, high, _ = APPLIANCE_RUNS[int(rng.integers(len(APPLIANCE_RUNS)))]
        runs = [(power, low, high)]
    for power, low, high in runs:
        readings = max(1, round(rng.uniform(low, high) / step_min))
        start = int(rng.integers(0, length))
        load[start : start + readings] += power * rng.uniform(0.9, 1.1)
    return load


def request_bounds(details: dict[str, Any]) -> NilmRequestBounds:
    """The served model's window, interval, lengths and limit as ``/info`` shows them."""
    try:
        return NilmRequestBounds.model_validate(details)
    except ValidationError as exc:
        raise ModelyardError(
            f"the server's /info details are not a NILM model's: {first_error(exc)}"
        ) from None


def nilm_payloads(
    details: dict[str, Any], length: int, seed: int, variants: int = VARIANTS
) -> list[Payload]:
    """JSON bodies: the example request (``{"aggregate_w": [...], "interval_s": ...}``; a
    server without one: the interval alone) with ``length`` readings of mains each."""
    bounds = request_bounds(details)
    example = details.get("example")
    request = dict(example) if isinstance(example, dict) else {}
    request.pop("start", None)  # the series start at random times of day
    interval_s = int(request.setdefault("interval_s", bounds.interval_s))
    limit_w = bounds.max_aggregate_w
    rng = np.random.default_rng(seed)
    return [
        json_payload(
            {**request, "aggregate_w": mains_profile(length, interval_s, rng, limit_w).tolist()}
        )
        for _ in range(variants)
    ]


def nilm_request_payloads(
    details: dict[str, Any], options: LoadOptions, _openapi: "OpenApi"
) -> list[Payload]:
    """Series of the length ``options`` ask for (a model window by default), within the
    server's accepted lengths."""
    bounds = request_bounds(details)
    interval_s = bounds.interval_s
    length = nilm_series_length(
        options.nilm_length, bounds.window, interval_s, bounds.min_length, bounds.max_length
    )
    log.info("modelyard: %d-reading mains series every %d s", length, interval_s)
    if options.nilm_length == "day" and length != 86400 // interval_s:
        log.warning("modelyard: a day does not fit the server's max_length; sending %d", length)
    return nilm_payloads(details, length, options.seed)


# --- tabular -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericField:
    name: str
    minimum: float | None
    maximum: float | None


def numeric_fields(openapi: dict[str, Any], names: list[str]) -> list[NumericField]:
    """The request row's number fields and their bounds, from the server's OpenAPI schema."""
    row = row_schema(openapi).get("properties", {})
    found = []
    for name in names:
        for option in [row.get(name, {}), *row.get(name, {}).get("anyOf", [])]:
            if option.get("type") == "number":
                found.append(
                    NumericField(name, _bound(option, "minimum"), _bound(option, "maximum"))
                )
                break
    return found


def row_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """The row object of ``POST /predict``'s JSON body (inline, or a ``$ref`` to a component);
    empty if none."""
    schemas = openapi.get("components", {}).get("schemas", {})
    body = (
        openapi.get("paths", {})
        .get("/predict", {})
        .get("post", {})
        .get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
    )
    return _first_object(body, schemas) or {}


def _first_object(node: Any, schemas: dict[str, Any]) -> dict[str, Any] | None:
    """The first object schema with properties in ``node`` (depth first, references followed)."""
    if isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str):
            return _first_object(schemas.get(reference.rsplit("/", 1)[-1]), schemas)
        if isinstance(node.get("properties"), dict):
            return node
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            if found := _first_object(child, schemas):
                return found
    return None


def _bound(schema: dict[str, Any], key: str) -> float | None:
    value = schema.get(key)
    return float(value) if isinstance(value, int | float) else None


def perturbed_row(
    example: dict[str, Any], fields: list[NumericField], rng: np.random.Generator
) -> dict[str, Any]:
    """The example with each numeric value moved a little (at most 5 % of itself and 2 % of its
    allowed range) and clipped to its bounds. Types are kept, and so are whole numbers (a
    construction year stays a year)."""
    row = dict(example)
    for field in fields:
        value = row.get(field.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # left out, null or not a number: sent as in the example
        scale = 0.05 * abs(value) or 1.0
        low = -math.inf if field.minimum is None else field.minimum
        high = math.inf if field.maximum is None else field.maximum
        if math.isfinite(high - low):
            scale = min(scale, 0.02 * (high - low))
        moved = min(max(float(value) + rng.uniform(-scale, scale), low), high)
        if float(value).is_integer():
            moved = float(_whole_within(moved, low, high))
        row[field.name] = int(moved) if isinstance(value, int) else round(moved, 3)
    return row


def _whole_within(value: float, low: float, high: float) -> int:
    whole = round(value)
    if whole < low:
        whole = math.ceil(low)
    if whole > high:
        whole = math.floor(high)
    return whole


def tabular_payloads(
    details: dict[str, Any], openapi: dict[str, Any], seed: int, variants: int = VARIANTS
) -> list[Payload]:
    """JSON bodies: one perturbed example row each."""
    example = details.get("example")
    if not isinstance(example, dict) or not example:
        raise ModelyardError("the server's /info has no details.example row to send")
    names = [str(n) for n in details.get("features", list(example))]
    fields = numeric_fields(openapi, names)
    rng = np.random.default_rng(seed)
    perturbed = (perturbed_row(example, fields, rng) for _ in range(variants - 1))
    return [json_payload(example), *(json_payload(row) for row in perturbed)]


def tabular_request_payloads(
    details: dict[str, Any], options: LoadOptions, openapi: "OpenApi"
) -> list[Payload]:
    """Perturbed example rows, within the bounds of the server's OpenAPI schema (when it can be
    read; else the example row is sent as it is)."""
    try:
        schema = openapi()
    except OSError as exc:
        log.warning("modelyard: no OpenAPI schema (%s); sending the example row as it is", exc)
        schema = {}
    names = [str(name) for name in details.get("features") or []]
    numeric = ", ".join(f.name for f in numeric_fields(schema, names)) or "none"
    log.info("modelyard: perturbing the example's numeric fields: %s", numeric)
    return tabular_payloads(details, schema, options.seed)


# --- vision ------------------------------------------------------------------------------------


def synthetic_jpeg(size: int, rng: np.random.Generator) -> bytes:
    """A JPEG of ``size`` x ``size``: a colour gradient, a few filled shapes and sensor noise."""
    from PIL import Image, ImageDraw

    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    pixels = np.broadcast_to(start + (end - start) * ramp, (size, size, 3)).copy()
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        x1, y1 = x0 + int(rng.integers(2, size // 2 + 3)), y0 + int(rng.integers(2, size // 2 + 3))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0.0, 6.0, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def image_files(folder: Path) -> list[Path]:
    """Up to ``MAX_IMAGES`` .jpg/.jpeg/.png files under ``folder`` (recursively, sorted)."""
    if not folder.is_dir():
        raise ModelyardError(f"images folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ModelyardError(f"no .jpg/.jpeg/.png images under {folder}")
    return files[:MAX_IMAGES]


def multipart_payload(data: bytes, filename: str, media_type: str) -> Payload:
    """A ``multipart/form-data`` body with ``data`` as the file part named ``file``."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {media_type}\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return Payload(body, f"multipart/form-data; boundary={boundary}")


def vision_payloads(
    details: dict[str, Any], seed: int, images: Path | None = None, variants: int = VARIANTS
) -> list[Payload]:
    """Uploads of the images in ``images`` when given, else of synthetic JPEGs."""
    if images is not None:
        return [
            multipart_payload(path.read_bytes(), path.name, _media_type(path))
            for path in image_files(images)
        ]
    size = int(details["image_size"])
    rng = np.random.default_rng(seed)
    return [
        multipart_payload(synthetic_jpeg(size, rng), f"synthetic-{i}.jpg", "image/jpeg")
        for i in range(variants)
    ]


def vision_request_payloads(
    details: dict[str, Any], options: LoadOptions, _openapi: "OpenApi"
) -> list[Payload]:
    return vision_payloads(details, options.seed, options.images)


def _media_type(path: Path) -> str:
    return "image/png" if path.suffix.lower() == ".png" else "image/jpeg"


def json_payload(content: Any) -> Payload:
    return Payload(json.dumps(content, separators=(",", ":")).encode(), JSON_TYPE)


# --- by task family ----------------------------------------------------------------------------

#: Reads the server's OpenAPI schema when a builder needs it (tabular bounds); may raise OSError.
OpenApi = Callable[[], dict[str, Any]]
Builder = Callable[[dict[str, Any], LoadOptions, OpenApi], list[Payload]]

#: task family (``/info``'s ``task``) -> payload builder over ``/info``'s ``details``
BUILDERS: dict[str, Builder] = {
    "nilm": nilm_request_payloads,
    "tabular": tabular_request_payloads,
    "vision": vision_request_payloads,
}


def unknown_task(info: dict[str, Any]) -> str | None:
    """Why the served bundle cannot be load-tested (a task family without a builder), or None."""
    task = info.get("task")
    if task in BUILDERS:
        return None
    return (
        f"it serves project {info.get('project')!r} of task {task!r}, which the load test cannot "
        f"feed; known task families: {', '.join(BUILDERS)}"
    )


def request_payloads(info: dict[str, Any], options: LoadOptions, openapi: OpenApi) -> list[Payload]:
    """The payloads for the server that answered ``info`` (``GET /info``), by its task family."""
    reason = unknown_task(info)
    if reason is not None:
        raise ModelyardError(f"cannot load-test this server: {reason}")
    details = info.get("details")
    if not isinstance(details, dict):
        raise ModelyardError("the server's /info has no details to build payloads from")
    return BUILDERS[str(info["task"])](details, options, openapi)
