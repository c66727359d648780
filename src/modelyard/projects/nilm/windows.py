"""Sliding windows over a mains series, without a Python-level copy per window.

seq2point maps a window of ``window`` mains readings to the appliance power at its midpoint. For
training, windows are described only by their start index; a batch is gathered with one fancy-index
into a strided view (:func:`numpy.lib.stride_tricks.sliding_window_view`), i.e. one copy per batch.
For inference over a whole series the series is padded at both ends so that every reading gets a
prediction (see :func:`pad_edges`).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def check_window(window: int) -> None:
    """seq2point needs a midpoint, so windows have odd length of at least 3."""
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd number >= 3, got {window}")


def valid_window_starts(valid: np.ndarray, window: int) -> np.ndarray:
    """Start indices ``s`` such that ``valid[s : s + window]`` is all True (no gap inside)."""
    check_window(window)
    count = valid.shape[0] - window + 1
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    invalid_before = np.concatenate([[0], np.cumsum(~valid, dtype=np.int64)])
    invalid_inside = invalid_before[window : window + count] - invalid_before[:count]
    return np.flatnonzero(invalid_inside == 0).astype(np.int64)


def window_view(series: np.ndarray, window: int) -> np.ndarray:
    """A read-only (n - window + 1, window) view of ``series``; no data is copied.

    The same view as ``sliding_window_view``, built directly: that function's argument handling
    costs more than the rest of a one-window prediction.
    """
    series = np.ascontiguousarray(series)
    if series.ndim != 1 or not 1 <= window <= series.shape[0]:
        return sliding_window_view(series, window)  # its precise errors for bad arguments
    step = series.strides[0]
    view = np.ndarray(
        shape=(series.shape[0] - window + 1, window),
        dtype=series.dtype,
        buffer=series,
        strides=(step, step),
    )
    view.flags.writeable = False
    return view


def gather_windows(series: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """Copy the windows starting at ``starts`` into one contiguous (len(starts), window) array."""
    return np.ascontiguousarray(window_view(series, window)[starts])


def pad_edges(series: np.ndarray, window: int) -> np.ndarray:
    """Repeat the first and last reading ``window // 2`` times so that every reading is a midpoint.

    Predictions for the first and last ``window // 2`` readings therefore see a window that is
    partly made-up (the edge value held constant); they are returned but are less reliable.
    """
    half = window // 2
    return np.pad(series, (half, half), mode="edge")
