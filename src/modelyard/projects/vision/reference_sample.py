"""The image family's reference profile: training images described as the server logs uploads.

A seeded sample of the training split, stratified by class (each class keeps its share), of at
most :data:`REFERENCE_ROWS` images. Each image's original bytes are decoded exactly as the server
decodes an upload (:func:`.image_decoding.open_image` then :func:`.image_decoding.opened_pixels`,
with the contract's limits), described by :func:`.drift_features.upload_features`, predicted by
the exported ONNX model through ONNX Runtime (logits and embedding from one call, as served),
and turned into columns by :func:`.drift_features.log_rows`: the very function the monitor
applies to the prediction log. Without the raw images (only the prepared pixel cache), the
statistics come from the cached pixels, which the same decode produced, and the upload's size
facts (width, height, bytes a pixel) are unknown (None).
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelyard.core.reference_profile import ReferenceProfile
from modelyard.projects.vision.contract import VisionContract
from modelyard.projects.vision.drift_features import (
    COLUMNS,
    EMBEDDING_KEY,
    Row,
    image_statistics,
    log_rows,
    logged_embedding,
    upload_features,
)
from modelyard.projects.vision.image_decoding import (
    ImageLimits,
    normalise,
    open_image,
    opened_pixels,
)
from modelyard.projects.vision.metrics import ranked_classes
from modelyard.serving.runtime import OnnxModel

#: Images in a reference profile: a few thousand, enough for stable drift tests per feature.
REFERENCE_ROWS = 3000
#: Images per ONNX Runtime call while predicting the sample.
PREDICT_BATCH = 256

#: A sampled image: its logged features (no embedding yet) and model-size pixels.
Decoded = tuple[dict[str, Any], NDArray[np.uint8]]


def stratified_sample(labels: NDArray[np.integer], rows: int, seed: int) -> NDArray[np.int64]:
    """Positions of at most ``rows`` of ``labels``, each class keeping its share.

    Each class gets ``rows x its fraction`` rounded down, and the rows left over go to the
    classes with the largest remainders; a class's rows are drawn by a generator seeded with
    ``(seed, class)``. Sorted positions; all of them when there are no more than ``rows``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size <= rows:
        return np.arange(labels.size, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * rows / labels.size
    quota = np.floor(exact).astype(np.int64)
    leftover = rows - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:leftover]] += 1
    picks = [
        np.random.default_rng([seed, int(label)]).choice(
            np.flatnonzero(labels == label), size=int(share), replace=False
        )
        for label, share in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def decoded_upload(data: bytes, contract: VisionContract) -> Decoded:
    """One image file's bytes decoded as the server decodes an upload, and its features."""
    limits = ImageLimits(
        contract.limits.max_pixels, contract.limits.max_decoded_bytes, "the model's contract"
    )
    opened = open_image(data, limits, contract.image_size)
    pixels = opened_pixels(opened, contract.image_size)
    return upload_features(len(data), opened.original_size, pixels), pixels


def cached_image(pixels: NDArray[np.uint8]) -> Decoded:
    """A prepared (cached) image: the statistics, but no upload size facts."""
    return dict(image_statistics(pixels)), pixels


def profile_rows(
    images: Sequence[Callable[[], Decoded]], contract: VisionContract, onnx_model: Path
) -> list[Row]:
    """Decode, predict (ONNX Runtime) and describe ``images`` as :func:`log_rows` does."""
    runtime = OnnxModel(onnx_model)
    rows: list[Row] = []
    for start in range(0, len(images), PREDICT_BATCH):
        decoded = [load() for load in images[start : start + PREDICT_BATCH]]
        batch = normalise(np.stack([pixels for _, pixels in decoded]), contract.mean, contract.std)
        outputs = runtime.run_outputs(batch)
        top = ranked_classes(outputs[0], contract.classes, 1)
        for position, (features, _) in enumerate(decoded):
            if len(outputs) > 1:
                features[EMBEDDING_KEY] = logged_embedding(outputs[1][position])
            rows.extend(log_rows(features, top[position]))
    return rows


def build_profile(
    rows: Sequence[Row], drawn: str, seed: int, metrics: dict[str, Any]
) -> ReferenceProfile:
    """The rows as a profile with the family's columns."""
    data = {name: [row.get(name) for row in rows] for name in COLUMNS}
    return ReferenceProfile(
        family="vision", drawn=drawn, seed=seed, columns=COLUMNS, data=data, metrics=metrics
    )
