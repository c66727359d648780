"""Predicted vs true values, for people to see where a valuation model goes wrong."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_predicted_vs_true(
    path: Path, truth: np.ndarray, predicted: np.ndarray, baseline: np.ndarray, unit: str
) -> Path:
    """Scatter of model and baseline predictions against the truth, with ±10 % bands."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    high = float(np.quantile(truth, 0.995)) * 1.1
    line = np.array([0.0, high])
    for axis, values, title in ((axes[0], predicted, "model"), (axes[1], baseline, "baseline")):
        axis.scatter(truth, values, s=4, alpha=0.35)
        axis.plot(line, line, color="black", linewidth=1)
        axis.fill_between(
            line, line * 0.9, line * 1.1, color="tab:green", alpha=0.15, label="±10 %"
        )
        axis.set_xlim(0, high)
        axis.set_ylim(0, high)
        axis.set_title(title)
        axis.set_xlabel(f"true ({unit})")
        axis.legend(loc="upper left")
    axes[0].set_ylabel(f"predicted ({unit})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
