"""Position information for attention: T5 relative position bias and rotary embedding.

T5 (HF `T5Attention`): log-bucketed relative distances -> one learned scalar per head, added to
the scores. Rotary (GPT-J / CodeGen): the first `rotary_dim` dims of each query and key head are
rotated by position-dependent angles, in the interleaved (`rotate_every_two`) layout.

Legend: B batch, N heads, R buckets, L query length, S key length, H head_dim, P rotary_dim.
"""

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from codet5p_jax.dtypes import DType


def relative_position_bucket(
    relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """Maps `key_pos - query_pos` to buckets exactly as HF `T5Attention._relative_position_bucket`.

    Numpy on purpose: positions are static, so the table is a compile-time constant, and the
    float32 log matches torch's float32 computation bucket for bucket.
    """
    rel = np.asarray(relative_position, dtype=np.int64)
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).astype(np.int64) * num_buckets
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    is_small = rel < max_exact
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(rel.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        )
    if_large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    if_large = np.minimum(if_large, num_buckets - 1)
    return (buckets + np.where(is_small, rel, if_large)).astype(np.int32)


class RelativePositionBias(nn.Module):
    """Computes the `[1, N, L, S]` attention bias shared by all layers of one stack.

    Attributes:
      num_heads: N; the table `rel_embedding` is `[N, R]`.
      num_buckets: R (HF `relative_attention_num_buckets`).
      max_distance: Distance beyond which all positions share a bucket.
      bidirectional: True for encoders (separate buckets for keys after the query).
      stddev: Normal init std of the table (HF T5: `d_model**-0.5`).
      param_dtype: Storage dtype of the table.
    """

    num_heads: int
    num_buckets: int
    max_distance: int
    bidirectional: bool
    stddev: float
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, q_len: int, k_len: int, q_offset=None):
        """Bias for queries at `q_offset + [0, q_len)` and keys at `[0, k_len)`.

        Args:
          q_len: Static number of query positions.
          k_len: Static number of key positions.
          q_offset: None for teacher forcing (queries start at 0), or a traced int scalar for
            cached decoding, where the query position is only known at run time.

        Returns:
          float32 `[1, N, q_len, k_len]`.
        """
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(
                nn.initializers.normal(self.stddev), ("heads", "relpos_buckets")
            ),
            (self.num_heads, self.num_buckets),
            self.param_dtype,
        )
        bucket = lambda rel: relative_position_bucket(  # noqa: E731
            rel, self.bidirectional, self.num_buckets, self.max_distance
        )
        rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
        if q_offset is None:
            buckets = jnp.asarray(bucket(rel))
        else:
            # Every value `rel - q_offset` can take lies in [-(k_len - 1), k_len - 1].
            lookup = jnp.asarray(bucket(np.arange(-(k_len - 1), k_len)))
            buckets = lookup[jnp.clip(rel - q_offset + (k_len - 1), 0, 2 * k_len - 2)]
        bias = jnp.take(table.astype(jnp.float32), buckets, axis=1)  # [N, L, S]
        return bias[None]


def rotary_inv_freq(rotary_dim: int, base: float = 10000.0) -> np.ndarray:
    """`[P/2]` float32 angular frequencies `base**(-2i/P)`, as HF `create_sinusoidal_positions`.

    Follows torch's float32 steps (exponent rounded to float32, power rounded once, float32
    reciprocal) rather than one float64 evaluation: an ulp of a frequency is multiplied by the
    position (up to 2048), so a differently rounded table drifts ~1e-4 rad from HF's.
    """
    if rotary_dim % 2:
        raise ValueError(f"rotary_dim must be even, got {rotary_dim}")
    exponent = (np.arange(0, rotary_dim, 2) / rotary_dim).astype(np.float32)
    power = (np.float64(base) ** exponent.astype(np.float64)).astype(np.float32)
    return np.float32(1.0) / power


def rotate_every_two(x):
    """`[..., P]` -> `[..., P]`: each pair `(x0, x1)` becomes `(-x1, x0)` (GPT-J layout)."""
    x1, x2 = x[..., ::2], x[..., 1::2]
    return jnp.stack((-x2, x1), axis=-1).reshape(x.shape)


def apply_rotary(x, positions, rotary_dim: int, base: float = 10000.0):
    """Rotates the first `rotary_dim` dims of every head of `x` by its position's angles.

    Mirrors HF CodeGen `apply_rotary_pos_emb` over `x[..., :rotary_dim]`: pair `(2i, 2i+1)` is
    rotated by `position * base**(-2i/P)`; dims past `rotary_dim` pass through unchanged.

    Float32 island: angles, sin/cos and the rotation run in float32 (bf16 angles at position
    2000 would be off by whole radians); the result is cast back to `x.dtype`.

    Args:
      x: `[B, L, N, H]` queries or keys.
      positions: int `[L]` or `[B, L]` absolute positions. Cached decoding passes
        `offset + arange(L)` so each new token gets its own position.
      rotary_dim: P <= H, even.
      base: Frequency base (10000 in GPT-J / CodeGen).

    Returns:
      `[B, L, N, H]` in `x.dtype`.
    """
    angles = jnp.asarray(positions, jnp.float32)[..., None] * rotary_inv_freq(rotary_dim, base)
    # [..., L, P/2] -> [..., L, 1, P]: each frequency repeated for its pair, broadcast over N.
    sin = jnp.repeat(jnp.sin(angles), 2, axis=-1)[..., None, :]
    cos = jnp.repeat(jnp.cos(angles), 2, axis=-1)[..., None, :]
    x32 = x.astype(jnp.float32)
    rot, rest = x32[..., :rotary_dim], x32[..., rotary_dim:]
    rot = rot * cos + rotate_every_two(rot) * sin
    return jnp.concatenate([rot, rest], axis=-1).astype(x.dtype)
