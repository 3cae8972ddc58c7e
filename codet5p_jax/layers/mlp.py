"""Feed-forward blocks: T5 v1.0 and GPT-J / CodeGen.

T5: `wo(dropout(relu(wi(x))))`, no biases. GPT-J: `dropout(fc_out(gelu_new(fc_in(x))))`, with
biases.

Legend: B batch, L length, D features, F mlp_dim.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from codet5p_jax.dtypes import DType, Precision


def _dense(features, axes, std, use_bias, dtype, param_dtype, precision, name):
    """`nn.Dense` with logical axes on its kernel (and bias, the kernel's output axis)."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]),
        name=name,
    )


class T5Mlp(nn.Module):
    """[B, L, D] -> [B, L, F] -> [B, L, D] (HF `T5DenseActDense`), bias-free `wi` and `wo`.

    Attributes:
      features: D, input and output width.
      mlp_dim: F (HF `d_ff`).
      dropout_rate: Dropout on the hidden activations (HF T5 applies it there).
      dtype: Compute dtype.
      param_dtype: Storage dtype of the kernels.
      precision: `lax.Precision` of both matmuls.
      init_std: Normal init std of both kernels; None uses HF T5's fan-in init (`wi` `D**-0.5`,
        `wo` `F**-0.5`).
    """

    features: int
    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Precision = None
    init_std: float | None = None

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        """[B, L, D] -> [B, L, D]."""
        dense = lambda feats, axes, fan_in, name: _dense(  # noqa: E731
            feats,
            axes,
            fan_in**-0.5 if self.init_std is None else self.init_std,
            False,
            self.dtype,
            self.param_dtype,
            self.precision,
            name,
        )
        h = dense(self.mlp_dim, ("embed", "mlp"), self.features, "wi")(x)
        h = nn.relu(h)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return dense(self.features, ("mlp", "embed"), self.mlp_dim, "wo")(h)


def gelu_new(x):
    """Tanh-approximate GELU, HF `NewGELUActivation` (`gelu_new`, GPT-2 / GPT-J / CodeGen)."""
    return jax.nn.gelu(x, approximate=True)


class GPTJMlp(nn.Module):
    """[B, L, D] -> [B, L, F] -> [B, L, D] with biases and `gelu_new` (HF `CodeGenMLP`).

    `fc_in`, `gelu_new`, `fc_out`; dropout (HF `resid_pdrop`) on the output.

    Attributes:
      features: D, input and output width.
      mlp_dim: F (HF `n_inner`, default 4 * D).
      dropout_rate: Dropout on the block output.
      dtype: Compute dtype.
      param_dtype: Storage dtype of kernels and biases.
      precision: `lax.Precision` of both matmuls.
      init_std: Normal init std of both kernels (HF `initializer_range`); biases start at zero.
    """

    features: int
    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Precision = None
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        """[B, L, D] -> [B, L, D]."""
        dense = lambda feats, axes, name: _dense(  # noqa: E731
            feats, axes, self.init_std, True, self.dtype, self.param_dtype, self.precision, name
        )
        h = gelu_new(dense(self.mlp_dim, ("embed", "mlp"), "fc_in")(x))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        y = dense(self.features, ("mlp", "embed"), "fc_out")(h)
        return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
