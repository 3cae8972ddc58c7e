"""Sampling: HF warper semantics, support and frequencies on a hand-built distribution, seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from testlib import padded_prompts
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from codet5p_jax.decoding.generate import generate
from codet5p_jax.decoding.sampling import process_logits, temperature_sample


@pytest.mark.parametrize(
    "temperature, top_k, top_p", [(1.0, 5, 1.0), (0.7, 0, 0.9), (1.3, 20, 0.5), (1.0, 0, 0.2)]
)
def test_process_logits_matches_hf_warpers(temperature, top_k, top_p):
    logits = np.random.default_rng(0).normal(size=(6, 50)).astype(np.float32) * 2
    ref = torch.tensor(logits)
    ref = TemperatureLogitsWarper(temperature)(None, ref)
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    ours = np.asarray(process_logits(jnp.asarray(logits), temperature, top_k, top_p))
    ref = ref.numpy()
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref))
    np.testing.assert_allclose(ours[~np.isinf(ours)], ref[~np.isinf(ref)], rtol=1e-6)


# A hand-built next-token distribution over 8 ids.
PROBS = np.array([0.05, 0.30, 0.02, 0.20, 0.25, 0.08, 0.06, 0.04])


def draw(top_k=0, top_p=1.0, rows=512, steps=16, seed=0):
    """All tokens drawn by the sampling loop from a model whose logits are always log(PROBS)."""
    logits = jnp.log(jnp.broadcast_to(jnp.asarray(PROBS, jnp.float32), (rows, PROBS.size)))
    fixed = lambda tokens, cache: (logits, cache)  # noqa: E731
    out = jax.jit(
        lambda key: temperature_sample(
            fixed, logits, (), max_new_tokens=steps, rng=key, temperature=1.0,
            top_k=top_k, top_p=top_p, eos_id=None,
        )
    )(jax.random.PRNGKey(seed))  # fmt: skip
    assert (np.asarray(out.lengths) == steps).all()
    return np.asarray(out.tokens).reshape(-1)


def assert_frequencies(tokens, support):
    """Only `support` ids occur, with the renormalised probabilities (5-sigma binomial bound)."""
    assert set(np.unique(tokens)) <= set(support)
    p = PROBS[support] / PROBS[support].sum()
    freq = np.array([(tokens == t).mean() for t in support])
    sigma = np.sqrt(p * (1 - p) / tokens.size)
    assert (np.abs(freq - p) < 5 * sigma).all(), (freq, p)


def test_top_k_support_and_frequencies():
    assert_frequencies(draw(top_k=3), support=[1, 4, 3])


def test_top_p_support_and_frequencies():
    # Sorted mass: 0.30, 0.55, 0.75, 0.83 -> with top_p=0.7 the nucleus is {1, 4, 3} (0.75).
    assert_frequencies(draw(top_p=0.7), support=[1, 4, 3])
    # top_p=0.5 needs the two best (0.55); top_p just above 0.30 also needs two.
    assert_frequencies(draw(top_p=0.5), support=[1, 4])
    assert_frequencies(draw(top_p=0.31), support=[1, 4])


def test_unfiltered_sampling_follows_the_distribution():
    assert_frequencies(draw(), support=list(range(8)))


def test_sampling_is_reproducible_and_seed_dependent(pair):
    hf, model, params, cfg = pair("codet5p-220m", 16)
    ids, mask = padded_prompts(cfg.vocab_size)
    kw = dict(method="sample", max_new_tokens=10, num_samples=4, top_k=8, top_p=0.95)
    a = generate(model, params, ids, mask, seed=3, **kw)
    b = generate(model, params, ids, mask, seed=3, **kw)
    c = generate(model, params, ids, mask, seed=4, **kw)
    assert a.tokens.shape == (3, 4, 10)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    assert not np.array_equal(a.tokens, c.tokens)
    # The samples of one prompt are independent draws, not copies.
    assert any(len({tuple(s) for s in row}) > 1 for row in a.tokens)


def test_top_k_one_is_greedy(pair):
    hf, model, params, cfg = pair("codet5p-220m", 16)
    ids, mask = padded_prompts(cfg.vocab_size)
    sampled = generate(
        model, params, ids, mask, method="sample", top_k=1, num_samples=2, max_new_tokens=10
    )
    greedy = generate(model, params, ids, mask, max_new_tokens=10)
    np.testing.assert_array_equal(sampled.tokens, np.repeat(greedy.tokens, 2, axis=1))
