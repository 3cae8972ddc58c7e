"""Accuracy, binary P/R/F1 and MAP@R against hand-computed values and independent references."""

import numpy as np
import pytest

from codet5p_jax.evaluation import classification_metrics as cm


def test_accuracy():
    assert cm.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 50.0
    with pytest.raises(ValueError, match="no predictions to score"):
        cm.accuracy([], [])
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        cm.accuracy([0, 1, 1], [0, 1])


def test_precision_recall_f1_hand_computed():
    # CodeXGLUE BigCloneBench README example: {'Recall': 0.25, 'Prediction': 0.5, 'F1': 1/3}.
    # tp = 1 (row 0), 2 predicted positives, 4 true positives.
    scores = cm.precision_recall_f1([1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 1, 0])
    assert scores == pytest.approx({"precision": 50.0, "recall": 25.0, "f1": 100 / 3})
    # P = 1/1, R = 1/3, F1 = 2 * 1 * (1/3) / (4/3) = 0.5.
    assert cm.precision_recall_f1([1, 0, 0, 0], [1, 1, 0, 1]) == pytest.approx(
        {"precision": 100.0, "recall": 100 / 3, "f1": 50.0}
    )


def test_no_positive_predictions_score_zero():
    # sklearn's zero_division result: nothing predicted positive -> precision 0, F1 0.
    assert cm.precision_recall_f1([0, 0, 0], [1, 0, 1]) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
    }
    with pytest.raises(ValueError, match="got label 2"):
        cm.precision_recall_f1([0, 1], [2, 1])


def test_precision_recall_f1_equal_confusion_counts():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pred, gold = rng.integers(0, 2, 30).tolist(), rng.integers(0, 2, 30).tolist()
        tp = sum(p == g == 1 for p, g in zip(pred, gold, strict=True))
        fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold, strict=True))
        fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold, strict=True))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        got = cm.precision_recall_f1(pred, gold)
        assert got["f1"] == pytest.approx(100 * f1)
        assert got["precision"] == pytest.approx(100 * tp / (tp + fp) if tp else 0.0)
        assert got["recall"] == pytest.approx(100 * tp / (tp + fn) if tp else 0.0)


def test_map_at_r_hand_computed():
    # 1-D vectors: the score of (i, j) is v_i * v_j. Labels A A A B B, v = 5 1 2 4 3.
    # query 0 (A): ranks 3 4 2 1; R = 2; top 2 hold no A -> AP 0.
    # query 1 (A): ranks 0 3 4 2; R = 2; hit at rank 1 -> (1/1) / 2 = 0.5.
    # query 2 (A): ranks 0 3 4 1; hit at rank 1 -> 0.5.
    # query 3 (B): ranks 0 4 2 1; R = 1; rank 1 is A -> 0. query 4 (B): ranks 0 3 2 1 -> 0.
    vectors = np.array([[5.0], [1.0], [2.0], [4.0], [3.0]])
    assert cm.map_at_r(vectors, list("AAABB")) == pytest.approx(100 * (0 + 0.5 + 0.5 + 0 + 0) / 5)


def test_map_at_r_partial_hits_and_ties():
    # Query 0 (A, R = 2) ranks 1 (B), 2 (A), 4 (B), 3 (A): one hit, at rank 2 -> (1/2) / 2.
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, -0.5], [0.0, 1.0], [0.2, 0.9]])
    labels = ["A", "B", "A", "A", "B"]
    assert list(np.argsort(-(vectors @ vectors[0])[1:]) + 1) == [1, 2, 4, 3]
    assert cm.map_at_r(vectors, labels) == pytest.approx(_codexglue_map(vectors, labels))
    assert _codexglue_ap(vectors, labels, 0) == 0.25
    # Ties: a zero vector scores 0 against everything; corpus order decides (1, 2, 3).
    # q0 (A, R=1): rank 1 is 1 (A) -> 1. q1 (A): ranks 3 2 0 -> 0. q2 (B): ranks 3 1 0 -> 1.
    # q3 (B): ranks 2 1 0 -> 1. Breaking q0's tie the other way would give 50 instead of 75.
    tied = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert cm.map_at_r(tied, ["A", "A", "B", "B"]) == pytest.approx(75.0)


def _codexglue_ap(vectors, labels, i):
    """The CodeXGLUE POJ-104 recipe for query i, written independently: predictions are the
    top-R others by dot product, AP = sum over hits of (hits so far / rank), divided by R."""
    scores = np.asarray(vectors) @ np.asarray(vectors[i])
    answers = {j for j, other in enumerate(labels) if other == labels[i] and j != i}
    order = sorted((j for j in range(len(labels)) if j != i), key=lambda j: (-scores[j], j))
    hits, total = 0, 0.0
    for rank, j in enumerate(order[: len(answers)], start=1):
        if j in answers:
            hits += 1
            total += hits / rank
    return total / len(answers)


def _codexglue_map(vectors, labels):
    return 100 * float(np.mean([_codexglue_ap(vectors, labels, i) for i in range(len(labels))]))


def test_map_at_r_equals_the_codexglue_recipe_on_random_vectors():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 8))
    labels = rng.integers(0, 5, 40).tolist()
    assert cm.map_at_r(vectors, labels) == pytest.approx(_codexglue_map(vectors, labels))


def test_map_at_r_refuses_a_label_with_one_program():
    with pytest.raises(ValueError, match="label 'C' has a single program"):
        cm.map_at_r(np.eye(3), ["A", "A", "C"])
