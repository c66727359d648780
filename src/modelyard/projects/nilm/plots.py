"""Plots people would rather look at than read: a day of predicted vs true appliance power."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def busiest_days(times_ns: np.ndarray, targets_w: np.ndarray, count: int) -> list[np.datetime64]:
    """The ``count`` calendar days with the most total appliance energy, most active first."""
    days = times_ns.astype("datetime64[ns]").astype("datetime64[D]")
    unique, inverse = np.unique(days, return_inverse=True)
    energy = np.bincount(inverse, weights=targets_w.sum(axis=1), minlength=unique.shape[0])
    order = np.argsort(energy)[::-1][:count]
    return [unique[i] for i in order]


def plot_day(
    path: Path,
    day: np.datetime64,
    times_ns: np.ndarray,
    aggregate_w: np.ndarray,
    true_w: np.ndarray,
    predicted_w: np.ndarray,
    appliances: Sequence[str],
    title: str,
) -> Path:
    """One panel of mains power, then one panel per appliance with true and predicted power."""
    days = times_ns.astype("datetime64[ns]").astype("datetime64[D]")
    mask = days == day
    stamps = times_ns[mask].astype("datetime64[ns]")
    figure, axes = plt.subplots(
        len(appliances) + 1, 1, figsize=(12, 2.0 * (len(appliances) + 1)), sharex=True
    )
    axes[0].plot(stamps, aggregate_w[mask], color="0.3", linewidth=0.8)
    axes[0].set_ylabel("mains (W)")
    axes[0].set_title(title)
    for j, name in enumerate(appliances):
        axis = axes[j + 1]
        axis.plot(stamps, true_w[mask, j], label="true", color="tab:blue", linewidth=1.0)
        axis.plot(
            stamps, predicted_w[mask, j], label="predicted", color="tab:orange", linewidth=1.0
        )
        axis.set_ylabel(f"{name} (W)")
        axis.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel(str(day))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
