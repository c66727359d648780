"""Training curves from Lightning's CSV log: loss per epoch, training vs validation."""

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _epoch_means(metrics_csv: Path) -> dict[str, dict[int, float]]:
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            epoch = row.get("epoch")
            if not epoch:
                continue
            for key in ("train_loss", "train_loss_epoch", "val_loss"):
                if row.get(key):
                    name = "train_loss" if key.startswith("train") else key
                    sums[name][int(float(epoch))].append(float(row[key]))
    return {k: {e: sum(v) / len(v) for e, v in per.items()} for k, per in sums.items()}


def plot_training_curves(metrics_csv: Path, output: Path) -> Path | None:
    """Write the curves PNG; returns None when the log holds no epoch-level losses yet."""
    if not metrics_csv.is_file():
        return None
    curves = _epoch_means(metrics_csv)
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    for key, label in (("train_loss", "training"), ("val_loss", "validation")):
        if key in curves:
            epochs = sorted(curves[key])
            axis.plot(epochs, [curves[key][e] for e in epochs], marker="o", label=label)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.set_title("Training curves")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=90)
    plt.close(figure)
    return output
