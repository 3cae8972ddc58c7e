"""Boolean attention masks, broadcastable to `[B, N, L, S]` (True = may attend)."""

import jax.numpy as jnp


def padding_mask(key_mask):
    """[B, S] (1 = real token) -> [B, 1, 1, S]: mask padded keys only, as HF does."""
    return key_mask.astype(bool)[:, None, None, :]


def causal_mask(length: int):
    """[1, 1, L, L]: query i sees keys j <= i."""
    idx = jnp.arange(length)
    return (idx[None, :] <= idx[:, None])[None, None]


def cached_causal_mask(q_offset, q_len: int, k_len: int):
    """[1, 1, L, S] for queries at `q_offset + [0, L)` against a cache of `S` positions."""
    q_pos = q_offset + jnp.arange(q_len)
    return (jnp.arange(k_len)[None, :] <= q_pos[:, None])[None, None]
