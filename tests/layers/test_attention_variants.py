"""MultiHeadAttention options: biased projections, scaled scores and rotary positions vs a numpy
reference, and rotary cached decoding vs teacher forcing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from transformers.models.codegen import modeling_codegen as hf

from codet5p_jax.layers.attention import MultiHeadAttention
from codet5p_jax.layers.masks import cached_causal_mask, causal_mask

B, L, D, N, H, ROT = 2, 6, 12, 3, 4, 2


def _module(**kwargs):
    return MultiHeadAttention(num_heads=N, head_dim=H, features=D, **kwargs)


def _np_rotary(x, positions):
    """HF CodeGen's rotary on `[B, L, N, H]` numpy, through its own torch functions."""
    import torch

    table = hf.create_sinusoidal_positions(int(positions.max()) + 1, ROT)
    sin, cos = torch.split(table[torch.tensor(positions)], ROT // 2, dim=-1)
    t = torch.tensor(x)
    rot = hf.apply_rotary_pos_emb(t[..., :ROT], sin, cos)
    return torch.cat([rot, t[..., ROT:]], dim=-1).numpy()


def _np_attention(p, xq, xkv, scale, mask, q_pos=None, k_pos=None):
    proj = lambda x, name: np.einsum("bld,dnh->blnh", x, p[name]["kernel"]) + p[name]["bias"]  # noqa: E731
    q, k, v = proj(xq, "query"), proj(xkv, "key"), proj(xkv, "value")
    if q_pos is not None:
        q, k = _np_rotary(q, q_pos), _np_rotary(k, k_pos)
    s = np.einsum("blnh,bsnh->bnls", q, k) * scale
    s = np.where(mask, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.einsum("bnls,bsnh->blnh", w, v)
    return np.einsum("blnh,nhd->bld", out, p["out"]["kernel"]) + p["out"]["bias"]


def _random_params(module, x):
    """Params with every leaf (biases included) drawn at random, so each one matters."""
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), x, x)["params"])
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.RandomState(0)
    draws = [rng.randn(*leaf.shape).astype(np.float32) * 0.5 for leaf in leaves]
    return jax.tree.unflatten(tree, draws)


def test_biased_projections_match_numpy():
    x = np.random.RandomState(1).randn(B, L, D).astype(np.float32)
    module = _module(use_bias=True, score_scale=H**-0.5)
    params = _random_params(module, jnp.asarray(x))
    assert params["query"]["bias"].shape == (N, H) and params["out"]["bias"].shape == (D,)
    mask = causal_mask(L)
    got = module.apply({"params": params}, jnp.asarray(x), jnp.asarray(x), mask=mask)
    expected = _np_attention(params, x, x, H**-0.5, np.asarray(mask))
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_rotary_cross_attention_uses_separate_query_and_key_positions():
    # CodeT5+ cross-attention rotates decoder queries and encoder keys at their own positions.
    rng = np.random.RandomState(2)
    xq, xkv = rng.randn(B, L, D).astype(np.float32), rng.randn(B, L + 3, D).astype(np.float32)
    module = _module(use_bias=True, rotary_dim=ROT, score_scale=H**-0.5, is_cross_attention=True)
    params = _random_params(module, jnp.asarray(xq))
    q_pos, k_pos = np.tile(4 + np.arange(L), (B, 1)), np.tile(np.arange(L + 3), (B, 1))
    got = module.apply(
        {"params": params}, jnp.asarray(xq), jnp.asarray(xkv), q_positions=q_pos, kv_positions=k_pos
    )
    full = np.ones((1, 1, L, L + 3), bool)
    expected = _np_attention(params, xq, xkv, H**-0.5, full, q_pos, k_pos)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_rotary_cached_decoding_matches_teacher_forcing():
    x = jnp.asarray(np.random.RandomState(3).randn(B, L, D), jnp.float32)
    module = _module(rotary_dim=ROT, score_scale=H**-0.5)
    params = module.init(jax.random.key(0), x, x)["params"]
    want = module.apply({"params": params}, x, x, mask=causal_mask(L))

    # Cache-creating call on a [B, L] dummy, then one token at a time at its own position.
    _, variables = module.apply(
        {"params": params}, jnp.zeros_like(x), jnp.zeros_like(x), decode=True, mutable=["cache"]
    )
    cache, steps = variables["cache"], []
    for t in range(L):
        step = x[:, t : t + 1]
        out, variables = module.apply(
            {"params": params, "cache": cache},
            step,
            step,
            mask=cached_causal_mask(t, 1, L),
            decode=True,
            cache_position=t,
            q_positions=t + jnp.arange(1),
            kv_positions=t + jnp.arange(1),
            mutable=["cache"],
        )
        cache = variables["cache"]
        steps.append(out)
    got = jnp.concatenate(steps, axis=1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
