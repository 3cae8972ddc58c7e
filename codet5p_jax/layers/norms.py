"""Normalisation layers: RMS norm (T5's "LayerNorm") and LayerNorm with bias (GPT-J / CodeGen).

Legend: D features (the normalised last axis).
"""

import flax.linen as nn
import jax.numpy as jnp

from codet5p_jax.dtypes import DType


class RMSNorm(nn.Module):
    """`x * rsqrt(mean(x**2) + eps) * scale`, as HF `T5LayerNorm`: scale only, no mean, no bias.

    Statistics are a float32 island: bf16 variance of wide activations loses too many bits.

    Attributes:
      epsilon: Added to the mean square (HF `layer_norm_epsilon`).
      dtype: Compute dtype of the output.
      param_dtype: Storage dtype of `scale` `[D]`.
    """

    epsilon: float = 1e-6
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x):
        """[..., D] -> [..., D]."""
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jnp.reciprocal(jnp.sqrt(var + self.epsilon))).astype(self.dtype)
        # HF T5 casts the normalised value to the compute dtype before the scale.
        return y * scale.astype(self.dtype)


class LayerNorm(nn.Module):
    """`(x - mean) * rsqrt(var + eps) * scale + bias`, as `torch.nn.LayerNorm` (CodeGen `ln_1`).

    Float32 island: mean, variance and the affine map run in float32 whatever the compute dtype
    (a bf16 mean of activations with a large common offset cancels to noise); only the result is
    cast, which is also what torch's fused kernel does for half inputs.

    Attributes:
      epsilon: Added to the variance (CodeGen `layer_norm_epsilon` 1e-5).
      dtype: Compute dtype of the output.
      param_dtype: Storage dtype of `scale` and `bias`, both `[D]`.
    """

    epsilon: float = 1e-5
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x):
        """[..., D] -> [..., D]."""
        features = (x.shape[-1],)
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
            features,
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
            features,
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        # Two-pass variance (mean of squared deviations): E[x^2] - E[x]^2 cancels badly.
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(self.dtype)
