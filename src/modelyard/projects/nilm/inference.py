"""Appliance power for a whole mains series. Numpy only: shared by evaluation and serving."""

from collections.abc import Callable

import numpy as np

from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.nilm.windows import check_window, pad_edges, window_view

#: Maps a float32 (batch, window) array of normalised mains windows to (batch, appliances) scores.
WindowPredictor = Callable[[np.ndarray], np.ndarray]


def predict_series(
    aggregate_w: np.ndarray,
    predictor: WindowPredictor,
    normalisation: Normalisation,
    window: int,
    batch_size: int = 4096,
) -> np.ndarray:
    """Return (len(aggregate_w), appliances) predicted watts, one row per mains reading.

    The series is edge-padded so the output has the input's length (see ``pad_edges``).
    Predicted power is clipped to [0, mains reading]: an appliance cannot produce power, nor draw
    more than the whole house (measured on UK-DALE house 2 this lowers every appliance's MAE).
    """
    windows = series_windows(aggregate_w, normalisation, window)
    outputs = [
        predictor(np.ascontiguousarray(windows[start : start + batch_size]))
        for start in range(0, windows.shape[0], batch_size)
    ]
    return scores_to_watts(np.concatenate(outputs, axis=0), aggregate_w, normalisation)


def series_windows(
    aggregate_w: np.ndarray, normalisation: Normalisation, window: int
) -> np.ndarray:
    """The normalised, edge-padded model windows of a mains series: (len(aggregate_w), window).

    A read-only strided view; copy slices before handing them to a runtime.
    """
    check_window(window)
    normalised = normalisation.normalise_aggregate(
        pad_edges(np.asarray(aggregate_w, dtype=np.float32), window)
    )
    return window_view(normalised, window)


def scores_to_watts(
    scores: np.ndarray, aggregate_w: np.ndarray, normalisation: Normalisation
) -> np.ndarray:
    """Model scores -> watts, clipped to [0, the mains reading] (see :func:`predict_series`)."""
    mains = np.maximum(np.asarray(aggregate_w, dtype=np.float32), 0.0)[:, None]
    watts: np.ndarray = np.clip(normalisation.denormalise_targets(scores), 0.0, mains)
    return watts
