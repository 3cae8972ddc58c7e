"""Defect- and clone-detection scores as the CodeXGLUE evaluators compute them.

* Defect detection (`Code-Code/Defect-detection/evaluator/evaluator.py`): accuracy, the share of
  predictions equal to the label.
* BigCloneBench (`Code-Code/Clone-detection-BigCloneBench/evaluator/evaluator.py`): sklearn's
  binary precision / recall / F1 of the positive class 1 (the evaluator moved from "macro" to
  binary scores on 2021-09-13). With no predicted positive, precision is 0, and F1 is 0 when
  precision + recall is 0 (sklearn's `zero_division` result).
* POJ-104 (`Code-Code/Clone-detection-POJ-104/evaluator/evaluator.py`): MAP@R. Each program is a
  query against all the others; R is the number of other programs of its problem; its average
  precision is the mean, over those R relevant programs, of `hits so far / rank` at each rank
  `<= R` where a relevant program was retrieved (relevant programs beyond rank R count 0).
  CodeXGLUE ranks by dot product with the query itself excluded; ties are left to numpy's
  quicksort there, broken here by corpus order (the earlier program ranks first).

All scores are returned as percentages, as the paper reports them (CODET5P_FACTS §5.8).
"""

from collections.abc import Sequence

import numpy as np


def _check(predictions: Sequence[int], labels: Sequence[int]) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not len(labels):
        raise ValueError("no predictions to score")


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Percent of `predictions` equal to `labels`.

    Raises:
      ValueError: Lengths differ or there is nothing to score.
    """
    _check(predictions, labels)
    return 100.0 * float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def precision_recall_f1(predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """Binary precision, recall and F1 (percent) of the positive class 1.

    Raises:
      ValueError: Lengths differ, there is nothing to score, or a value is not 0 / 1.
    """
    _check(predictions, labels)
    pred, gold = np.asarray(predictions), np.asarray(labels)
    for name, values in (("prediction", pred), ("label", gold)):
        bad = sorted(set(values.tolist()) - {0, 1})
        if bad:
            raise ValueError(f"binary scores need 0/1 values; got {name} {bad[0]!r}")
    tp = int(np.sum((pred == 1) & (gold == 1)))
    precision = tp / max(int(np.sum(pred == 1)), 1) if tp else 0.0
    recall = tp / max(int(np.sum(gold == 1)), 1) if tp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": 100.0 * precision, "recall": 100.0 * recall, "f1": 100.0 * f1}


def map_at_r(vectors: np.ndarray, labels: Sequence) -> float:
    """MAP@R (percent) of `vectors [N, E]` ranked by dot product, each against all the others.

    Args:
      vectors: One row per program (unit vectors make the dot product the cosine).
      labels: Problem id of each row.

    Raises:
      ValueError: Shapes disagree, or a label has a single program (its R is 0: MAP@R is
        undefined for it).
    """
    vectors = np.asarray(vectors, np.float64)
    labels = np.asarray(labels)
    if vectors.ndim != 2 or len(vectors) != len(labels):
        raise ValueError(f"need [N, E] vectors for N labels; got {vectors.shape}, {len(labels)}")
    values, counts = np.unique(labels, return_counts=True)
    lonely = values[counts < 2]
    if len(lonely):
        raise ValueError(
            f"label {lonely[0].item()!r} has a single program: MAP@R needs at least 2 per label"
        )
    scores = vectors @ vectors.T
    precisions = []
    for i in range(len(labels)):
        others = np.array([j for j in range(len(labels)) if j != i])
        # Descending score; a stable sort keeps corpus order among equal scores.
        ranked = others[np.argsort(-scores[i, others], kind="stable")]
        relevant = labels[ranked] == labels[i]
        r = int(relevant.sum())
        hits = np.cumsum(relevant[:r])
        ranks = np.arange(1, r + 1)
        precisions.append(float(np.sum((hits / ranks)[relevant[:r]])) / r)
    return 100.0 * float(np.mean(precisions))
