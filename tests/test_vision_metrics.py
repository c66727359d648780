"""Classification scores, probability helpers and plots of the vision project."""

import struct
from pathlib import Path

import numpy as np
import pytest

from modelyard.projects.vision.metrics import (
    classification_scores,
    confusion_matrix,
    softmax,
    top_k,
)
from modelyard.projects.vision.plots import pca_2d, plot_confusion_matrix, plot_embedding

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["cat", "dog", "owl"]


# --------------------------------------------------------------------------- scores


def test_three_class_scores_by_hand() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])
    scores = classification_scores(y_true, y_pred, NAMES)
    # rows true, columns predicted
    assert scores["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert scores["accuracy"] == pytest.approx(6 / 10)
    assert scores["n_samples"] == 10
    per_class = scores["per_class"]
    # cat: 2 of 3 predicted cats are cats, 2 of 4 cats found; F1 = 2 * (2/3)(1/2) / (7/6) = 4/7
    assert per_class["cat"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7, "support": 4}
    )
    # dog: 2 of 4 predicted, 2 of 3 found; F1 = 2 * (1/2)(2/3) / (7/6) = 4/7
    assert per_class["dog"] == pytest.approx(
        {"precision": 1 / 2, "recall": 2 / 3, "f1": 4 / 7, "support": 3}
    )
    # owl: 2 of 3 predicted, 2 of 3 found; F1 = 2/3
    assert per_class["owl"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert scores["macro_f1"] == pytest.approx((4 / 7 + 4 / 7 + 2 / 3) / 3)
    assert scores["class_names"] == NAMES
    assert isinstance(per_class["cat"]["support"], int)


def test_perfect_predictions() -> None:
    labels = np.array([2, 0, 1, 1])
    scores = classification_scores(labels, labels, NAMES)
    assert scores["accuracy"] == 1.0
    assert scores["macro_f1"] == 1.0
    assert scores["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_zero_division_is_zero() -> None:
    # "owl" is never predicted (precision 0/0) and never true (recall 0/0);
    # "dog" is predicted but never true (recall 0/0).
    y_true = np.array([0, 0, 0])
    y_pred = np.array([0, 1, 1])
    scores = classification_scores(y_true, y_pred, NAMES)
    owl = scores["per_class"]["owl"]
    dog = scores["per_class"]["dog"]
    assert owl == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert dog == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    cat = scores["per_class"]["cat"]
    # cat: precision 1/1, recall 1/3, F1 = 2 * (1/3) / (4/3) = 1/2
    assert cat == pytest.approx({"precision": 1.0, "recall": 1 / 3, "f1": 0.5, "support": 3})
    # macro-F1 counts every configured class, absent ones included
    assert scores["macro_f1"] == pytest.approx(0.5 / 3)
    assert scores["accuracy"] == pytest.approx(1 / 3)


def test_empty_input_scores_zero() -> None:
    empty = np.array([], dtype=np.int64)
    scores = classification_scores(empty, empty, NAMES)
    assert scores["accuracy"] == 0.0
    assert scores["macro_f1"] == 0.0
    assert scores["confusion_matrix"] == [[0, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_labels_out_of_range_or_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"y_pred has labels outside 0\.\.2"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match=r"y_true has labels outside 0\.\.2"):
        confusion_matrix(np.array([-1, 1]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"differ in length: 2 vs 3"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1, 2]), 3)


# --------------------------------------------------------------------------- probabilities


def test_softmax_by_hand_and_rows_sum_to_one() -> None:
    probabilities = softmax(np.array([[0.0, np.log(3.0)], [1.0, 1.0]]))
    np.testing.assert_allclose(probabilities, [[0.25, 0.75], [0.5, 0.5]], atol=1e-12)
    rng = np.random.default_rng(0)
    many = softmax(rng.normal(0, 5, size=(50, 10)))
    np.testing.assert_allclose(many.sum(axis=1), 1.0, atol=1e-12)
    assert (many >= 0).all()


def test_softmax_is_stable_for_large_logits() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0 + np.log(3.0), -1000.0]]))
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities, [[0.25, 0.75, 0.0]], atol=1e-12)
    # float32 logits (what the network returns): e^0 / (e^0 + e^0 + e^-1)
    third = softmax(np.array([[1000.0, 1000.0, 999.0]], np.float32))
    expected = 1 / (2 + np.exp(-1.0))
    np.testing.assert_allclose(third, [[expected, expected, expected * np.exp(-1.0)]], atol=1e-12)
    # a single vector works over its only axis
    np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])


def test_top_k_orders_descending_and_breaks_ties_by_class_index() -> None:
    probabilities = np.array(
        [
            [0.1, 0.5, 0.2, 0.2],
            [0.25, 0.25, 0.25, 0.25],
            [0.0, 0.3, 0.3, 0.4],
        ]
    )
    indices, values = top_k(probabilities, 3)
    np.testing.assert_array_equal(indices, [[1, 2, 3], [0, 1, 2], [3, 1, 2]])
    np.testing.assert_allclose(values, [[0.5, 0.2, 0.2], [0.25, 0.25, 0.25], [0.4, 0.3, 0.3]])


def test_top_k_edge_cases() -> None:
    indices, values = top_k(np.array([0.2, 0.7, 0.1]), 1)
    np.testing.assert_array_equal(indices, [1])
    np.testing.assert_allclose(values, [0.7])
    # more than there are: every class, in order
    indices, _ = top_k(np.array([0.2, 0.7, 0.1]), 5)
    np.testing.assert_array_equal(indices, [1, 0, 2])
    with pytest.raises(ValueError, match=r"k must be >= 1, got 0"):
        top_k(np.array([0.5, 0.5]), 0)


# --------------------------------------------------------------------------- plots


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_pca_separates_two_clusters_along_the_first_axis() -> None:
    rng = np.random.default_rng(0)
    # two clusters 20 apart along a direction spread over all 8 dims, noise std 0.5
    direction = np.ones(8) / np.sqrt(8)
    a = rng.normal(0, 0.5, size=(40, 8)) + 10 * direction
    b = rng.normal(0, 0.5, size=(60, 8)) - 10 * direction
    projected = pca_2d(np.vstack([a, b]))
    assert projected.shape == (100, 2)
    first = projected[:, 0]
    # every point of one cluster on one side of every point of the other
    assert first[:40].min() > first[40:].max() or first[:40].max() < first[40:].min()
    assert abs(first[:40].mean() - first[40:].mean()) > 15
    # second axis is noise only
    assert np.abs(projected[:, 1]).max() < 3
    # centred projection, and the same every time (sign fixed)
    assert abs(first.mean()) < 1e-9
    np.testing.assert_array_equal(projected, pca_2d(np.vstack([a, b])))


def test_pca_recovers_known_coordinates_and_fixes_the_sign() -> None:
    # points on the x axis only (D = 3): PC1 = +x (largest loading made positive), PC2 = 0
    features = np.array([[-2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    np.testing.assert_allclose(pca_2d(features), [[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]], atol=1e-12)
    # and the same answer for the mirrored input, whatever sign the SVD chooses
    mirrored = pca_2d(-features)
    np.testing.assert_allclose(mirrored, [[2.0, 0.0], [0.0, 0.0], [-2.0, 0.0]], atol=1e-12)
    # one feature only: the second coordinate is 0
    np.testing.assert_allclose(pca_2d(np.array([[1.0], [3.0]])), [[-1.0, 0.0], [1.0, 0.0]])


def test_confusion_matrix_plot_writes_a_png(tmp_path: Path) -> None:
    names = [f"class_{i}_long_name" for i in range(10)]
    matrix = np.arange(100).reshape(10, 10)
    path = plot_confusion_matrix(tmp_path / "plots" / "confusion.png", matrix, names)
    assert path == tmp_path / "plots" / "confusion.png"
    width, height = _png_size(path)
    assert width > 500 and height > 500
    raw = plot_confusion_matrix(tmp_path / "raw.png", matrix[:3, :3], NAMES, normalise=False)
    _png_size(raw)
    with pytest.raises(ValueError, match=r"matrix has shape \(2, 2\), expected \(3, 3\)"):
        plot_confusion_matrix(tmp_path / "bad.png", [[1, 2], [3, 4]], NAMES)
    assert not (tmp_path / "bad.png").exists()


def test_embedding_plot_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(500, 16))
    labels = rng.integers(0, 3, size=500)
    path = plot_embedding(tmp_path / "embedding.png", features, labels, NAMES, max_points=200)
    width, height = _png_size(path)
    assert width > 400 and height > 400
    with pytest.raises(ValueError, match=r"do not describe the same points"):
        plot_embedding(tmp_path / "bad.png", features, labels[:10], NAMES)
