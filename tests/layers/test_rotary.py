"""Rotary position embedding vs HF CodeGen's own functions.

References: `create_sinusoidal_positions`, `apply_rotary_pos_emb` and `rotate_every_two` of
`transformers.models.codegen.modeling_codegen`.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.codegen import modeling_codegen as hf

from codet5p_jax.layers.positions import apply_rotary, rotary_inv_freq, rotate_every_two


def _hf_rotary(x, position_ids, rotary_dim):
    """HF `CodeGenAttention`'s rotary step on `[B, L, N, H]` with `[B, L]` position ids."""
    table = hf.create_sinusoidal_positions(int(position_ids.max()) + 1, rotary_dim)
    sin, cos = torch.split(table[torch.tensor(position_ids)], rotary_dim // 2, dim=-1)
    x = torch.tensor(x)
    rot = hf.apply_rotary_pos_emb(x[..., :rotary_dim], sin, cos)
    return torch.cat([rot, x[..., rotary_dim:]], dim=-1).numpy()


@pytest.mark.parametrize("rotary_dim", [2, 16, 32, 64, 80, 128])
def test_frequencies_match_hf_table(rotary_dim):
    # HF's frequencies, as `create_sinusoidal_positions` computes them: bit-identical, since an
    # ulp of a frequency times a position near 2048 would move the angle by ~1e-4 rad.
    inv = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64) / rotary_dim))
    np.testing.assert_array_equal(rotary_inv_freq(rotary_dim), inv.numpy())


@pytest.mark.parametrize("rotary_dim", [32, 64])  # CodeT5+ encoder / decoders
def test_angles_match_hf_table_over_the_whole_context(rotary_dim):
    # Rotating the pairs (1, 0) yields (cos, sin) of each angle: compare with HF's whole
    # [2048, P] sin|cos table, where position * frequency rounding matters most.
    unit = np.zeros((1, 2048, 1, rotary_dim), np.float32)
    unit[..., 0::2] = 1.0
    got = np.asarray(apply_rotary(jnp.asarray(unit), jnp.arange(2048), rotary_dim))[0, :, 0]
    table = hf.create_sinusoidal_positions(2048, rotary_dim).numpy()
    sin, cos = table[:, : rotary_dim // 2], table[:, rotary_dim // 2 :]
    np.testing.assert_allclose(got[:, 0::2], cos, atol=1e-5)
    np.testing.assert_allclose(got[:, 1::2], sin, atol=1e-5)


def test_rotate_every_two_matches_hf():
    x = np.random.RandomState(0).randn(2, 3, 4, 10).astype(np.float32)
    expected = hf.rotate_every_two(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(np.asarray(rotate_every_two(jnp.asarray(x))), expected)


@pytest.mark.parametrize("rotary_dim", [8, 16])  # partial (8 of 16 dims) and full rotary
def test_apply_rotary_matches_hf_from_position_zero(rotary_dim):
    b, length, n, h = 2, 9, 3, 16
    x = np.random.RandomState(1).randn(b, length, n, h).astype(np.float32)
    positions = np.arange(length)
    expected = _hf_rotary(x, np.tile(positions, (b, 1)), rotary_dim)
    got = apply_rotary(jnp.asarray(x), jnp.asarray(positions), rotary_dim)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)
    # Dims past rotary_dim are untouched.
    np.testing.assert_array_equal(np.asarray(got)[..., rotary_dim:], x[..., rotary_dim:])


def test_apply_rotary_matches_hf_with_per_row_offsets():
    # Cached decoding: each row's queries sit at its own offset (37 and 2040, near n_ctx 2048).
    b, length, n, h, rotary_dim = 2, 4, 2, 16, 8
    x = np.random.RandomState(2).randn(b, length, n, h).astype(np.float32)
    positions = np.array([[37], [2040]]) + np.arange(length)[None, :]
    expected = _hf_rotary(x, positions, rotary_dim)
    got = apply_rotary(jnp.asarray(x), jnp.asarray(positions), rotary_dim)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_apply_rotary_keeps_bf16_inputs_bf16():
    x = jnp.ones((1, 2, 1, 8), jnp.bfloat16)
    assert apply_rotary(x, jnp.arange(2), 4).dtype == jnp.bfloat16
