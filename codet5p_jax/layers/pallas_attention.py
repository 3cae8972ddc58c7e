"""Pallas flash attention for TPUs, with T5's relative-position bias and the masks as one bias.

`jax.experimental.pallas.ops.tpu.flash_attention` takes an additive bias `ab` of shape
`[B, N, L, S]` and returns its gradient, so a trained bias (T5's relative-position table) learns
through it. Splash attention (`pallas.ops.tpu.splash_attention`) takes masks but no additive
bias, so it cannot carry that bias; it could serve the bias-free rotary family only.

The kernel is compiled by Mosaic on a TPU. Off a TPU it runs only in Pallas's TPU interpret mode
(`jax.experimental.pallas.tpu.force_tpu_interpret_mode()`), which simulates the TPU on the host:
the vehicle of the CPU tests, never a fast path.

Legend: B batch, L query length, S key length, N heads, H head_dim.
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax._src import config as jax_config
from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

# The kernel's own default tile (`BlockSizes.get_default`), untuned here (no TPU to measure
# on). Its backward kernels tile keys in whole 128-lane blocks, so the key length must be a
# multiple of it; a query length below it is one full-length block.
BLOCK = 128
DTYPES = (jnp.float32, jnp.bfloat16)


def is_interpret_mode() -> bool:
    """Whether Pallas TPU kernels are interpreted on the host (`force_tpu_interpret_mode`)."""
    # jax exports only the setters of this flag (hence the private module); it is part of
    # jit's cache key, so reading it while tracing agrees with what `pallas_call` will do.
    flag = getattr(jax_config, "pallas_tpu_interpret_mode_context_manager", None)
    return flag is not None and flag.value is not None


def unsupported_reason(query, key) -> str | None:
    """Why the kernel cannot take `[B, L, N, H]` queries against `[B, S, N, H]` keys, or None.

    Args:
      query: `[B, L, N, H]` array or `jax.ShapeDtypeStruct`.
      key: `[B, S, N, H]` array or `jax.ShapeDtypeStruct`.

    Returns:
      A one-line reason, or None when the kernel (and its backward pass) can run.
    """
    backend = jax.default_backend()
    if backend != "tpu" and not is_interpret_mode():
        return f"Pallas flash attention needs a TPU (or TPU interpret mode), backend is {backend}"
    if query.dtype not in DTYPES or key.dtype != query.dtype:
        return f"Pallas flash attention needs float32/bfloat16 inputs, got {query.dtype}"
    head_dim = query.shape[-1]
    if head_dim > BLOCK and head_dim % BLOCK:
        return f"Pallas flash attention needs head_dim <= 128 or a multiple of 128, got {head_dim}"
    q_len, k_len = query.shape[1], key.shape[1]
    if k_len % BLOCK:
        return f"Pallas flash attention needs a key length divisible by {BLOCK}, got {k_len}"
    if q_len > BLOCK and q_len % BLOCK:
        return (
            f"Pallas flash attention needs a query length below or divisible by {BLOCK}, "
            f"got {q_len}"
        )
    return None


def block_sizes(q_len: int) -> tpu_flash.BlockSizes:
    """Forward and backward tiles for `q_len` queries (key lengths are multiples of `BLOCK`)."""
    bq, bk = min(BLOCK, q_len), BLOCK
    return tpu_flash.BlockSizes(
        block_q=bq,
        block_k_major=bk,
        block_k=bk,
        block_b=1,
        block_q_major_dkv=bq,
        block_k_major_dkv=bk,
        block_k_dkv=bk,
        block_q_dkv=bq,
        block_k_major_dq=bk,
        block_k_dq=bk,
        block_q_dq=bq,
    )


def _kernel(q, k, v, ab, sm_scale, sizes):
    return tpu_flash.flash_attention(
        q, k, v, ab, causal=False, sm_scale=sm_scale, block_sizes=sizes
    )


def _precision_context(precision):
    # The kernel takes no precision argument: its dots read the default at trace time.
    if precision is None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision(lax.Precision(precision).name.lower())


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _kernel_at_precision(q, k, v, ab, sm_scale, sizes, precision):
    """The kernel with its forward and backward dots traced at `precision`.

    The kernel's backward pass is traced when the gradient is taken, outside any context
    around the forward call, so its dots would otherwise get the backend default (on a TPU,
    less than float32 for a float32 model that asked for HIGHEST).
    """
    with _precision_context(precision):
        return _kernel(q, k, v, ab, sm_scale, sizes)


def _kernel_fwd(q, k, v, ab, sm_scale, sizes, precision):
    with _precision_context(precision):
        return jax.vjp(lambda *a: _kernel(*a, sm_scale, sizes), q, k, v, ab)


def _kernel_bwd(sm_scale, sizes, precision, pullback, d_out):
    del sm_scale, sizes
    with _precision_context(precision):
        return pullback(d_out)


_kernel_at_precision.defvjp(_kernel_fwd, _kernel_bwd)


def flash_attention(query, key, value, bias, mask, *, scale: float | None, precision=None):
    """The plain path's softmax attention through the TPU kernel.

    Bias and mask become one float32 `ab [B, N, L, S]`: masked entries are filled with the
    plain path's value (float32's lowest, which swallows any score), so a row whose keys are
    all masked is uniform in both paths (and gets no query, key or bias gradient in either),
    and the bias gets no gradient where it is masked. The
    kernel applies its scale after the bias (`(q.k + ab) * scale`), so the bias is divided by
    the scale first. Float32, not the compute dtype, so the bias gradient the kernel returns is
    summed over the batch without bf16 rounding.

    Args:
      query: `[B, L, N, H]`.
      key: `[B, S, N, H]`.
      value: `[B, S, N, H]`.
      bias: Optional additive bias broadcastable to `[B, N, L, S]`.
      mask: Optional boolean mask broadcastable to `[B, N, L, S]` (True = may attend).
      scale: Optional factor on the scores before the bias; None means 1.
      precision: `lax.Precision` of the kernel's dots, forward and backward (None: default).

    Returns:
      `[B, L, N, H]` in the query dtype.
    """
    batch, q_len, heads, _ = query.shape
    k_len = key.shape[1]
    sm_scale = 1.0 if scale is None else float(scale)
    ab = None
    if bias is not None or mask is not None:
        ab = jnp.zeros((), jnp.float32) if bias is None else bias.astype(jnp.float32)
        if sm_scale != 1.0:
            ab = ab / sm_scale
        if mask is not None:
            # Divided by a scale > 1 so that the kernel's `* scale` cannot overflow to -inf.
            ab = jnp.where(mask, ab, jnp.finfo(jnp.float32).min / max(1.0, sm_scale))
        ab = jnp.broadcast_to(ab, (batch, heads, q_len, k_len))
    # The kernel's layout is [B, N, L, H].
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))
    if mask is not None:
        # A query row with no key to attend (an all-padding example) gets uniform weights,
        # whatever its query; the plain path's where() also gives it no query or key gradient,
        # and zeroing its query here does the same to the kernel's.
        live = jnp.any(jnp.broadcast_to(mask, (batch, heads, q_len, k_len)), axis=-1)
        q = jnp.where(live[..., None], q, jnp.zeros((), q.dtype))
    out = _kernel_at_precision(q, k, v, ab, sm_scale, block_sizes(q_len), precision)
    return jnp.swapaxes(out, 1, 2)
