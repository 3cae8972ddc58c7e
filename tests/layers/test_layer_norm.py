"""LayerNorm (scale + bias) vs `torch.nn.LayerNorm`."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from codet5p_jax.layers.norms import LayerNorm


def _torch_layer_norm(x, scale, bias, eps):
    ref = torch.nn.LayerNorm(x.shape[-1], eps=eps)
    ref.weight.data = torch.tensor(scale)
    ref.bias.data = torch.tensor(bias)
    return ref(torch.tensor(x)).detach().numpy()


def test_layer_norm_matches_torch():
    rng = np.random.RandomState(0)
    # Per-feature offsets and a spread of 3: a non-zero mean that the norm has to remove.
    x = (rng.randn(2, 7, 24) * 3 + rng.randn(24) * 5).astype(np.float32)
    scale, bias = rng.randn(24).astype(np.float32), rng.randn(24).astype(np.float32)
    params = {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}
    got = LayerNorm(epsilon=1e-5).apply({"params": params}, jnp.asarray(x))
    expected = _torch_layer_norm(x, scale, bias, 1e-5)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_layer_norm_init_is_identity_affine():
    # torch.nn.LayerNorm starts at weight 1, bias 0; both carry the "embed" logical axis.
    x = jnp.asarray(np.random.RandomState(1).randn(1, 3, 16), jnp.float32)
    variables = LayerNorm().init(jax.random.key(0), x)
    params = variables["params"]
    np.testing.assert_array_equal(np.asarray(params["scale"].value), np.ones(16, np.float32))
    np.testing.assert_array_equal(np.asarray(params["bias"].value), np.zeros(16, np.float32))
    assert params["scale"].names == ("embed",) and params["bias"].names == ("embed",)


def test_layer_norm_statistics_in_float32_under_bf16():
    # Activations around 1024 with a spread of a few bf16 steps (8 apart there): in bf16 the
    # mean rounds by up to 4 and `x - mean` is off by a fifth of a standard deviation; float32
    # statistics are exact for these values, so only the final bf16 rounding remains.
    rng = np.random.RandomState(2)
    x = (1024 + 8 * rng.randint(-3, 4, size=(2, 5, 64))).astype(np.float32)
    x_bf16 = jnp.asarray(x, jnp.bfloat16)
    assert np.array_equal(np.asarray(x_bf16, np.float32), x)  # the input is exact in bf16
    scale, bias = rng.randn(64).astype(np.float32), rng.randn(64).astype(np.float32)
    params = {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}
    got = LayerNorm(epsilon=1e-5, dtype=jnp.bfloat16).apply({"params": params}, x_bf16)
    assert got.dtype == jnp.bfloat16
    expected = _torch_layer_norm(x, scale, bias, 1e-5)
    # bf16 keeps 8 significant bits: half an ulp is 2**-9 relative.
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, rtol=2**-8, atol=2**-8)
