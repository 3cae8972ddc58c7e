"""RMS norm vs HF `T5LayerNorm`."""

import jax.numpy as jnp
import numpy as np
import torch
from transformers.models.t5.modeling_t5 import T5LayerNorm

from codet5p_jax.layers.norms import RMSNorm


def test_rms_norm_matches_hf():
    rng = np.random.RandomState(0)
    x = rng.randn(2, 7, 24).astype(np.float32) * 3
    scale = rng.randn(24).astype(np.float32)
    ref = T5LayerNorm(24, eps=1e-6)
    ref.weight.data = torch.tensor(scale)
    expected = ref(torch.tensor(x)).detach().numpy()
    got = RMSNorm(epsilon=1e-6).apply({"params": {"scale": jnp.asarray(scale)}}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_rms_norm_statistics_in_float32_under_bf16():
    """bf16 in, bf16 out, but each output is the bf16 rounding of the exact (float64) result.

    With float32 statistics the only bf16 rounding is the final cast, so every element lies
    within half a bf16 ulp (2**-8 of its binade) of the float64 value, plus float32 slack (1e-6
    relative). Statistics in bf16 round the variance and the rsqrt factor to 8 bits first; about
    40% of these elements then land one ulp off. Rows span six decades of scale.
    """
    rng = np.random.default_rng(0)
    magnitude = np.logspace(-3, 3, 16)[:, None]
    x = (rng.standard_normal((16, 1024)) * magnitude).astype(jnp.bfloat16)
    params = {"scale": jnp.ones((1024,), jnp.float32)}  # 1.0 is exact: no second rounding
    y = RMSNorm(epsilon=1e-6, dtype=jnp.bfloat16).apply({"params": params}, jnp.asarray(x))
    assert y.dtype == jnp.bfloat16
    x64 = x.astype(np.float64)
    expected = x64 / np.sqrt(np.mean(x64**2, axis=-1, keepdims=True) + 1e-6)
    half_ulp = 2.0 ** (np.floor(np.log2(np.abs(expected))) - 8)
    error = np.abs(np.asarray(y, np.float64) - expected)
    bad = error > half_ulp + 1e-6 * np.abs(expected)
    assert not bad.any(), f"{bad.mean():.1%} of elements are not the rounded float64 value"
