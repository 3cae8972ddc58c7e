"""RMS norm vs HF `T5LayerNorm`."""

import jax
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
    # Values whose squares overflow bfloat16's 8-bit mantissa sums: stats must stay float32.
    x = jnp.full((1, 1, 4096), 300.0, jnp.bfloat16)
    params = {"scale": jnp.ones((4096,), jnp.float32)}
    y = RMSNorm(dtype=jnp.bfloat16).apply({"params": params}, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), 1.0, rtol=1e-2)
    assert not np.any(np.isnan(np.asarray(jax.device_get(y), np.float32)))
