"""`dot_product_attention` vs a numpy einsum reference."""

import jax.numpy as jnp
import numpy as np

from codet5p_jax.layers.attention import dot_product_attention


def _reference(q, k, v, bias, mask):
    scores = np.einsum("blnh,bsnh->bnls", q, k) + bias
    scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    w = np.exp(scores)
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bnls,bsnh->blnh", w, v)


def test_matches_numpy_with_bias_and_padding_mask():
    rng = np.random.RandomState(0)
    b, q_len, s, n, h = 2, 5, 7, 3, 4
    q, k, v = (rng.randn(b, x, n, h).astype(np.float32) for x in (q_len, s, s))
    bias = rng.randn(1, n, q_len, s).astype(np.float32)
    key_mask = np.ones((b, s), bool)
    key_mask[1, 4:] = False
    mask = key_mask[:, None, None, :]
    got = dot_product_attention(*map(jnp.asarray, (q, k, v, bias, mask)))
    np.testing.assert_allclose(np.asarray(got), _reference(q, k, v, bias, mask), atol=1e-5)


def test_masked_keys_get_no_weight():
    rng = np.random.RandomState(1)
    q, k = rng.randn(1, 2, 1, 4), rng.randn(1, 3, 1, 4)
    v = np.zeros((1, 3, 1, 4), np.float32)
    v[0, 2] = 1e6  # would dominate the output if the masked key leaked through
    mask = np.array([True, True, False])[None, None, None, :]
    got = dot_product_attention(*map(jnp.asarray, (q, k, v)), mask=jnp.asarray(mask))
    assert np.abs(np.asarray(got)).max() == 0.0
