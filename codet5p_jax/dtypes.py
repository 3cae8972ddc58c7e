"""Dtype and matmul-precision rules shared by layers and configs (the one module layers import).

The dtype policy has three names: `param_dtype` (storage), `dtype` (compute) and float32 islands
(softmax scores, norm statistics, logits), which each layer comments where they occur.
"""

from typing import Any

import jax
import jax.numpy as jnp

DType = Any  # a jnp dtype, numpy dtype or dtype name such as "bfloat16"
Precision = jax.lax.Precision | None


def matmul_precision(dtype: DType) -> Precision:
    """Precision of a model's matmuls: HIGHEST for float32 compute, else the backend's default.

    XLA runs float32 dots on GPUs as TF32 by default (PyTorch keeps matmuls in float32): on an
    H200 the float32 parity tests' logits were then up to 4.3e-3 off HF's. A float32 model asks
    for real float32; bfloat16 compute keeps the fast default.

    Args:
      dtype: The compute dtype.

    Returns:
      `lax.Precision.HIGHEST` for float32, otherwise None.
    """
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None
