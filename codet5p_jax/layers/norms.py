"""RMS norm: T5's "LayerNorm" (scale only, no mean subtraction, no bias)."""

import flax.linen as nn
import jax.numpy as jnp

from codet5p_jax.config import T5Config


class RMSNorm(nn.Module):
    """`x * rsqrt(mean(x**2) + eps) * scale`, as HF `T5LayerNorm`.

    Statistics are a float32 island: bf16 variance of wide activations loses too many bits.
    """

    config: T5Config

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
            (x.shape[-1],),
            cfg.params_dtype,
        )
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jnp.reciprocal(jnp.sqrt(var + cfg.layer_norm_epsilon))).astype(cfg.compute_dtype)
        return y * scale.astype(cfg.compute_dtype)
