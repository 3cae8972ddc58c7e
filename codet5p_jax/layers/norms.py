"""RMS norm: T5's "LayerNorm" (scale only, no mean subtraction, no bias).

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
