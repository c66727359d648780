"""Plots of a classifier's results: the confusion matrix and a 2-D map of its image embeddings.

The embedding map uses PCA (a centred SVD) rather than t-SNE or UMAP: it is deterministic, needs
no extra dependency and runs in well under a second on a few thousand points. It shows less
local structure, but whether the classes form separate clouds is visible all the same.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def plot_confusion_matrix(
    path: Path,
    matrix: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    normalise: bool = True,
) -> Path:
    """Heat map of the confusion matrix (rows true, columns predicted), counts in each cell.

    With ``normalise`` the colours are row fractions (per-class recall on the diagonal), so a
    rare class is as visible as a frequent one; the annotations stay raw counts either way.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"matrix has shape {counts.shape}, expected ({n}, {n})")
    if normalise:
        totals = counts.sum(axis=1, keepdims=True)
        shown = np.divide(
            counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals != 0
        )
        limit = 1.0
    else:
        shown = counts.astype(np.float64)
        limit = max(float(shown.max()), 1.0)
    size = max(4.0, 0.6 * n + 2.5)
    figure, axis = plt.subplots(figsize=(size + 1.0, size))
    image = axis.imshow(shown, cmap="Blues", vmin=0.0, vmax=limit)
    figure.colorbar(
        image,
        ax=axis,
        fraction=0.046,
        pad=0.04,
        label="fraction of true class" if normalise else "images",
    )
    axis.set_xticks(
        range(n), labels=list(class_names), rotation=45, ha="right", rotation_mode="anchor"
    )
    axis.set_yticks(range(n), labels=list(class_names))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    font = 8 if n > 6 else 10
    for i in range(n):
        for j in range(n):
            # White text on dark cells, black on light ones.
            colour = "white" if shown[i, j] > 0.5 * limit else "black"
            axis.text(
                j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=font
            )
    axis.set_title("confusion matrix" + (" (colour: row fraction)" if normalise else ""))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def pca_2d(features: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2): projection on the two leading principal components.

    Each component's sign is fixed so that its largest-magnitude loading is positive (SVD alone
    leaves the sign arbitrary), which keeps the picture the same from run to run. With fewer than
    two dimensions of variation the missing coordinates are 0.
    """
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {values.shape}")
    projected = np.zeros((values.shape[0], 2), dtype=np.float64)
    if values.shape[0] == 0:
        return projected
    centred = values - values.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    projected[:, : len(components)] = centred @ components.T
    return projected


def plot_embedding(
    path: Path,
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    max_points: int = 3000,
    seed: int = 0,
) -> Path:
    """Scatter of the features' 2-D PCA projection, one colour per true class.

    At most ``max_points`` points are drawn (a seeded random subset, the same for the same
    seed): more only hide each other and slow the plot down.
    """
    values = np.asarray(features)
    classes = np.asarray(labels, dtype=np.int64).reshape(-1)
    if values.ndim != 2 or values.shape[0] != classes.shape[0]:
        raise ValueError(
            f"features {values.shape} and labels {classes.shape} do not describe the same points"
        )
    if values.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(values.shape[0], max_points, False))
        values, classes = values[keep], classes[keep]
    points = pca_2d(values)
    palette = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    figure, axis = plt.subplots(figsize=(8, 6.5))
    for index, name in enumerate(class_names):
        mask = classes == index
        if mask.any():
            axis.scatter(
                points[mask, 0],
                points[mask, 1],
                s=6,
                alpha=0.6,
                color=palette(index % palette.N),
                label=f"{name} ({int(mask.sum())})",
            )
    axis.set_xlabel("principal component 1")
    axis.set_ylabel("principal component 2")
    axis.set_title(f"image embeddings, PCA ({values.shape[0]} points)")
    axis.legend(loc="best", fontsize="small", markerscale=2.5, framealpha=0.8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_roc_curve(
    path: Path, curve: Mapping[str, Sequence[float]], auc: float, positive: str
) -> Path:
    """The ROC curve (true against false positive rate) with the chance diagonal."""
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC 0.5)")
    axis.plot(
        curve["false_positive_rate"], curve["true_positive_rate"], label=f"model (AUC {auc:.3f})"
    )
    _rates(axis, "false positive rate", "true positive rate (recall)", "ROC curve", positive)
    axis.legend(loc="lower right")
    return _save(figure, path)


def plot_pr_curve(
    path: Path,
    curve: Mapping[str, Sequence[float]],
    auc: float,
    prevalence: float,
    positive: str,
) -> Path:
    """The precision-recall curve with the constant-score baseline (precision = prevalence)."""
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.axhline(prevalence, linestyle="--", color="grey", label=f"baseline (AP {prevalence:.3f})")
    axis.step(curve["recall"], curve["precision"], where="pre", label=f"model (AP {auc:.3f})")
    _rates(axis, "recall", "precision", "precision-recall curve", positive)
    axis.legend(loc="lower left")
    return _save(figure, path)


def _rates(axis: Axes, x: str, y: str, title: str, positive: str) -> None:
    """Axes of two rates (0 to 1; a little room above 1 for a curve along the top)."""
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title(f"{title}, positive class {positive!r}")


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
