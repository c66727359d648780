"""The image family's drift features: one definition for the reference profile and the server.

Drift is looked for in three groups of columns, each cheap to compute from what a prediction
already has:

* ``input``: statistics of the decoded image at the model's size (the pixels the model sees):
  brightness (mean luma), contrast (luma standard deviation), the mean of each colour channel,
  sharpness (variance of the 4-neighbour Laplacian of the luma, which blurring and hard JPEG
  re-compression lower), and of the upload as sent: its width and height and how many bytes it
  spends a pixel (hard re-compression shows there first);
* ``prediction``: the top-1 class (categorical) and its probability;
* ``embedding``: :data:`EMBEDDING_SIZE` numbers, a fixed, seeded random projection of the
  network's penultimate features (:func:`embedding_projection`), computed inside the exported
  ONNX graph as its second output, so the server gets it from the same call as the logits.

The server calls :func:`upload_features` when it decodes an upload and logs the result with
the embedding as the request's ``inputs``; :func:`log_rows` turns a logged ``inputs``/``outputs``
pair into the profile's columns, and export builds the reference profile through
:func:`log_rows` too, so both sides are one definition. numpy only (the server has no torch).
"""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelyard.core.reference_profile import Column
from modelyard.projects.vision.logged_outputs import logged_top

#: Numbers in the compact embedding (the ONNX graph's second output).
EMBEDDING_SIZE = 16
#: The seed of the projection: fixed, so two exports of one model give the same embedding.
EMBEDDING_SEED = 20_161
#: The name of the ONNX output (and of the manifest's second output tensor).
EMBEDDING_OUTPUT = "embedding"
#: The key the server logs the embedding under, in the request's ``inputs``.
EMBEDDING_KEY = "embedding"
#: ITU-R BT.601 luma weights (what Pillow's ``convert("L")`` uses).
_LUMA = np.array([0.299, 0.587, 0.114])
#: Decimal places logged: far below any drift that matters, and short JSON.
_DECIMALS = 4

#: Image statistics computed from the pixels (:func:`image_statistics`).
PIXEL_STATISTICS = ("brightness", "contrast", "red_mean", "green_mean", "blue_mean", "sharpness")
#: Facts of the upload as sent, already logged by servers before these features existed.
UPLOAD_FACTS = ("width", "height", "bytes_per_pixel")
PREDICTED_LABEL = "top1_label"
PREDICTED_PROBABILITY = "top1_probability"
EMBEDDING_COLUMNS = tuple(f"emb_{i}" for i in range(EMBEDDING_SIZE))

#: The reference profile's columns, in order; :func:`log_rows` gives exactly these keys.
COLUMNS: dict[str, Column] = {
    **{name: Column("numerical", "input") for name in (*PIXEL_STATISTICS, *UPLOAD_FACTS)},
    PREDICTED_LABEL: Column("categorical", "prediction"),
    PREDICTED_PROBABILITY: Column("numerical", "prediction"),
    **{name: Column("numerical", "embedding") for name in EMBEDDING_COLUMNS},
}

Row = dict[str, float | str | None]


def upload_features(
    size: int, original_size: tuple[int, int], pixels: NDArray[np.uint8]
) -> dict[str, float | int]:
    """What the server logs of one upload (``size`` bytes, ``original_size`` as sent, decoded to
    the model's ``pixels``): its size facts and :func:`image_statistics`."""
    width, height = original_size
    return {"bytes": size, "width": width, "height": height, **image_statistics(pixels)}


def image_statistics(pixels: NDArray[np.uint8]) -> dict[str, float]:
    """uint8 ``(H, W, 3)`` pixels (the model-size image) -> the pixel statistics, 0-255 scale.

    Measured at the model's size, not the upload's: the cost is fixed (a 64x64 or 256x256
    image), and it is what the model sees.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) pixels, got {pixels.dtype} {pixels.shape}")
    values = pixels.reshape(-1, 3).astype(np.float64)
    # matrix-vector products: numpy's strided per-channel mean is ~30x slower on (N, 3)
    channels = np.full(len(values), 1.0 / len(values)) @ values
    luma = (values @ _LUMA).reshape(pixels.shape[:2])
    return {
        "brightness": _rounded(luma.mean()),
        "contrast": _rounded(luma.std()),
        "red_mean": _rounded(channels[0]),
        "green_mean": _rounded(channels[1]),
        "blue_mean": _rounded(channels[2]),
        "sharpness": _rounded(_laplacian(luma).var()),
    }


def _laplacian(luma: NDArray[np.float64]) -> NDArray[np.float64]:
    """The 4-neighbour Laplacian of the interior pixels (an image of 1 or 2 pixels a side has
    no interior: its Laplacian is zero)."""
    if min(luma.shape) < 3:
        return np.zeros(1)
    centre = luma[1:-1, 1:-1]
    neighbours = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    laplacian: NDArray[np.float64] = neighbours - 4 * centre
    return laplacian


def embedding_projection(width: int) -> NDArray[np.float32]:
    """The fixed ``(width, EMBEDDING_SIZE)`` projection of ``width`` penultimate features.

    Gaussian entries scaled by ``1/sqrt(width)`` (a Johnson-Lindenstrauss projection: distances
    between images' features are kept approximately, and each number has the features' scale).
    numpy's PCG64 stream for a given seed is stable across numpy versions.
    """
    if width < 1:
        raise ValueError(f"the penultimate layer needs at least one feature, got {width}")
    rng = np.random.default_rng(EMBEDDING_SEED)
    weights = rng.standard_normal((width, EMBEDDING_SIZE)) / math.sqrt(width)
    return weights.astype(np.float32)


def logged_embedding(values: NDArray[np.float32]) -> list[float]:
    """One image's embedding row as the server logs it (rounded, plain floats)."""
    return [_rounded(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def log_rows(inputs: Any, outputs: Any) -> list[Row]:
    """One prediction-log row (its ``inputs`` and ``outputs`` JSON) -> one drift row.

    Keys are exactly :data:`COLUMNS`. Rows logged by older servers lack the pixel statistics
    (and the embedding, for bundles exported with one output); those values are None. Anything
    malformed gives None too, never an exception: the monitor reads whatever the log holds.
    """
    facts = inputs if isinstance(inputs, Mapping) else {}
    row: Row = {name: _number(facts.get(name)) for name in PIXEL_STATISTICS}
    width, height = _number(facts.get("width")), _number(facts.get("height"))
    size = _number(facts.get("bytes"))
    row["width"], row["height"] = width, height
    row["bytes_per_pixel"] = (
        _rounded(size / (width * height)) if size is not None and width and height else None
    )
    label, probability = _top1(outputs)
    row[PREDICTED_LABEL] = label
    row[PREDICTED_PROBABILITY] = probability
    embedding = facts.get(EMBEDDING_KEY)
    values = embedding if isinstance(embedding, list) and len(embedding) == EMBEDDING_SIZE else []
    for index, name in enumerate(EMBEDDING_COLUMNS):
        row[name] = _number(values[index]) if values else None
    return [row]


def _top1(outputs: Any) -> tuple[str | None, float | None]:
    """The first (most probable) class of the logged ``top`` list (the reference profile's
    predicted class is the most probable one too, also for a two-class model's decision)."""
    top = logged_top(outputs)
    if top is None:
        return None, None
    label = top.get("label")
    return (label if isinstance(label, str) else None), _number(top.get("probability"))


def _number(value: Any) -> float | None:
    """A finite number as float; None for anything else (missing, text, NaN, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _rounded(value: Any) -> float:
    return round(float(value), _DECIMALS)
