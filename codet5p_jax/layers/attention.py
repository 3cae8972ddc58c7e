"""Multi-head attention: one attention function, 3D-kernel projections, and the decoding cache.

Positions enter either as an additive bias (T5 relative positions, passed to `__call__`) or as a
rotary embedding of queries and keys (GPT-J / CodeGen, `rotary_dim` set); the layer itself has
no notion of a model family.

Legend: B batch, L query length, S key length, D features, N heads, H head_dim.

The decoding cache holds keys and values as `[B, N, H, S]` ("bnhs"), not in the `[B, S, N, H]`
of the projections: the per-step products contract over H (scores) and S (values) with B and N
as batch dimensions, and XLA's dot emitters want batch dimensions leading and the operands in
that order. With a `[B, S, N, H]` cache every decoding step re-laid out every layer's encoder
keys and values (24 copies of `[B, N, H, S]` per step at codet5p-220m); stored in the products'
order they are read in place.
"""

import contextlib
import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from codet5p_jax.dtypes import DType, Precision
from codet5p_jax.layers.positions import apply_rotary

# "plain": the einsum/softmax reference below. "xla" / "cudnn": `jax.nn.dot_product_attention`
# with that implementation (cuDNN flash attention on NVIDIA GPUs). "pallas": the Pallas TPU flash
# attention kernel (`pallas_attention.py`; off a TPU only inside Pallas's TPU interpret mode).
# "auto": cuDNN on a GPU, Pallas on a TPU, where the call is supported; else plain.
IMPLEMENTATIONS = ("plain", "auto", "xla", "cudnn", "pallas")
KV_LAYOUTS = ("bsnh", "bnhs")  # axis orders of keys / values: projections, decoding cache
_FUSED_DTYPES = (jnp.bfloat16, jnp.float16)
log = logging.getLogger(__name__)


@functools.cache
def _log_fallback(reason: str) -> None:
    # Once per distinct reason: a model traces the same attention shapes many times.
    log.warning("fused attention unavailable (%s); using the plain attention path", reason)


def _pallas():
    # Imported on first use: the Pallas TPU modules add about half a second to the import of
    # every process, and only TPU (or interpret-mode) runs need them.
    from codet5p_jax.layers import pallas_attention  # noqa: PLC0415

    return pallas_attention


def resolve_implementation(implementation: str) -> str:
    """The implementation "auto" stands for on this backend; others are returned as they are.

    "auto" picks the Pallas kernel on a TPU only: interpret mode on a CPU (the test vehicle) is
    far slower than the plain path, so it is reached by asking for "pallas" explicitly.
    """
    if implementation != "auto":
        return implementation
    return {"gpu": "cudnn", "tpu": "pallas"}.get(jax.default_backend(), "plain")


def fused_unsupported_reason(
    implementation: str, query, key, *, has_bias: bool, dropout: bool
) -> str | None:
    """Why `implementation` cannot run this attention call (None when it can).

    The cuDNN conditions are those of `jax.nn.dot_product_attention(implementation="cudnn")`
    (flash attention): bf16/fp16 inputs, head dim a multiple of 8 and <= 128, even query and
    key lengths when a bias is trained. The Pallas conditions are those of the TPU kernel
    (`pallas_attention.unsupported_reason`): a TPU or interpret mode, float32/bf16, key length
    a multiple of 128. Dropout is fused by neither (different random stream).
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"Unknown attention implementation {implementation!r}; {IMPLEMENTATIONS}")
    if implementation == "plain":
        return "plain requested"
    resolved = resolve_implementation(implementation)
    if resolved == "plain":
        return f"no fused attention for backend {jax.default_backend()} (auto)"
    if dropout:
        return "attention dropout is on"
    if resolved == "xla":
        return None
    if query.shape[1] == 1:
        # A cached decoding step: one query row, nothing for a flash kernel to tile.
        return "one query position (a decoding step)"
    if resolved == "pallas":
        return _pallas().unsupported_reason(query, key)
    if jax.default_backend() != "gpu":
        return f"cuDNN attention needs a GPU, backend is {jax.default_backend()}"
    if query.dtype not in _FUSED_DTYPES or key.dtype != query.dtype:
        return f"cuDNN attention needs bf16/fp16 inputs, got {query.dtype}"
    head_dim = query.shape[-1]
    if head_dim % 8 or head_dim > 128:
        return f"cuDNN attention needs head_dim % 8 == 0 and <= 128, got {head_dim}"
    q_len, k_len = query.shape[1], key.shape[1]
    if has_bias and (q_len % 2 or k_len % 2):
        return f"cuDNN attention with a bias needs even lengths, got query {q_len} key {k_len}"
    return None


def _fused_attention(query, key, value, bias, mask, *, scale, implementation):
    """`jax.nn.dot_product_attention` with the mask folded into one additive bias.

    The bias is broadcast to `[B or 1, N, L, S]`: cuDNN takes a full-length bias (and returns
    its gradient, which reaches the relative-position table), not a broadcastable mask.
    """
    batch, q_len, heads, _ = query.shape
    k_len = key.shape[1]
    additive = None if bias is None else bias.astype(jnp.float32)
    if mask is not None:
        # -2**40, not the dtype's min: cuDNN mishandles the difference of two huge negatives
        # (the value JAX itself uses for bf16); fp16 cannot hold it.
        big = -(2.0**15) if query.dtype == jnp.float16 else -(2.0**40)
        masked = jnp.where(mask, 0.0, big).astype(jnp.float32)
        additive = masked if additive is None else additive + masked
    if additive is not None:
        lead = batch if additive.shape[0] != 1 else 1
        additive = jnp.broadcast_to(additive, (lead, heads, q_len, k_len)).astype(query.dtype)
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        bias=additive,
        scale=1.0 if scale is None else float(scale),
        implementation=implementation,
    )


def dot_product_attention(
    query,
    key,
    value,
    bias=None,
    mask=None,
    *,
    dropout_rng=None,
    dropout_rate: float = 0.0,
    deterministic: bool = True,
    dtype=jnp.float32,
    precision=None,
    scale: float | None = None,
    implementation: str = "plain",
    kv_layout: str = "bsnh",
):
    """Softmax attention; unscaled by default (T5 folds 1/sqrt(H) into the query init).

    Every attention in the package goes through this function, so a fused kernel is swapped in
    at one place: `implementation` (see `IMPLEMENTATIONS`) selects the plain reference,
    `jax.nn.dot_product_attention` (GPU: cuDNN) or the Pallas TPU kernel; a call the fused
    kernel cannot take runs the plain path and logs the reason once ("auto" silently runs the
    plain path off GPUs and TPUs and for one-token decoding steps).

    Args:
      query: `[B, L, N, H]`.
      key: `[B, S, N, H]`, or `[B, N, H, S]` when `kv_layout == "bnhs"` (the decoding cache).
      value: As `key`.
      bias: Optional additive float bias broadcastable to `[B, N, L, S]` (relative positions).
      mask: Optional boolean mask broadcastable to `[B, N, L, S]`; False entries get no weight.
      dropout_rng: PRNG key for attention-probability dropout.
      dropout_rate: Dropout on the attention probabilities (HF T5 applies it there).
      deterministic: Disables dropout.
      dtype: dtype of the probabilities fed to the value product.
      precision: `lax.Precision` of both products (`dtypes.matmul_precision`).
      scale: Optional factor on the float32 scores before bias and softmax (CodeGen:
        `H**-0.5`); None leaves the scores as they are.
      implementation: One of `IMPLEMENTATIONS`.
      kv_layout: `KV_LAYOUTS` entry naming the axis order of `key` and `value`.

    Returns:
      `[B, L, N, H]`.
    """
    if kv_layout not in KV_LAYOUTS:
        raise ValueError(f"Unknown key/value layout {kv_layout!r}; {KV_LAYOUTS}")
    dropout = not deterministic and dropout_rate > 0.0
    # The fused kernels take [B, S, N, H]; judge a cached call by that shape.
    kernel_key = key
    if kv_layout == "bnhs":
        b, n, h, s = key.shape
        kernel_key = jax.ShapeDtypeStruct((b, s, n, h), key.dtype)
    reason = fused_unsupported_reason(
        implementation, query, kernel_key, has_bias=bias is not None, dropout=dropout
    )
    if reason is None:
        if kv_layout == "bnhs":
            # A call over the cache that a kernel takes (a prefill; "xla" also a step): the
            # transpose is paid per call, and the plain path below reads the cache in place.
            key, value = (jnp.transpose(x, (0, 3, 1, 2)) for x in (key, value))
        # Neither kernel takes a precision argument: a float32 model's HIGHEST (no TF32 on
        # GPUs, see dtypes.matmul_precision) goes in through the default instead.
        highest = precision == lax.Precision.HIGHEST
        with jax.default_matmul_precision("highest") if highest else contextlib.nullcontext():
            resolved = resolve_implementation(implementation)
            if resolved == "pallas":
                out = _pallas().flash_attention(
                    query, key, value, bias, mask, scale=scale, precision=precision
                )
            else:
                out = _fused_attention(
                    query, key, value, bias, mask, scale=scale, implementation=resolved
                )
        return out.astype(dtype)
    # What "auto" means by plain (no fused kernel on this backend, a decoding step): no log line.
    expected = implementation == "plain" or (
        implementation == "auto" and ("(auto)" in reason or "decoding step" in reason)
    )
    if not expected:
        _log_fallback(reason)
    # Float32 island: scores, bias and softmax, whatever the compute dtype.
    scores = jnp.einsum(
        f"blnh,{kv_layout}->bnls",
        query,
        key,
        precision=precision,
        preferred_element_type=jnp.float32,
    )
    if scale is not None:
        scores = scores * jnp.float32(scale)
    if bias is not None:
        scores = scores + bias.astype(jnp.float32)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)
    if not deterministic and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum(f"bnls,{kv_layout}->blnh", weights.astype(dtype), value, precision=precision)


class Projection(nn.Module):
    """A 3D-kernel projection, `[B, L, D] -> [B, L, N, H]` or back, with an optional bias.

    The direction follows the kernel: `[D, N, H]` when `axes[0] == "embed"`, else `[N, H, D]`. The
    kernel is created in its real 3D shape so each dimension carries its own logical axis.

    Attributes:
      shape: Kernel shape, `(D, N, H)` or `(N, H, D)`.
      axes: Logical axes of the kernel, `("embed", "heads", "kv")` or `("heads", "kv", "embed")`.
      stddev: Normal init std of the kernel.
      use_bias: Adds a zero-initialised bias `[N, H]` or `[D]`.
      dtype: Compute dtype.
      param_dtype: Storage dtype of kernel and bias.
      precision: `lax.Precision` of the einsum.
    """

    shape: tuple[int, int, int]
    axes: tuple[str, str, str]
    stddev: float
    use_bias: bool = False
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Precision = None

    @nn.compact
    def __call__(self, x):
        """[B, L, D] -> [B, L, N, H], or [B, L, N, H] -> [B, L, D]."""
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(self.stddev), self.axes),
            self.shape,
            self.param_dtype,
        )
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        if self.axes[0] == "embed":
            y = jnp.einsum("bld,dnh->blnh", x, kernel, precision=self.precision)
            out_shape, out_axes = self.shape[1:], self.axes[1:]
        else:
            # One [N*H, D] product rather than an einsum over two contracted axes: with two,
            # XLA:CPU transposed the [N, H, D] kernel (a full copy) on every call, also inside
            # the decoding loop; the reshapes are free in row-major order.
            n, h, d = self.shape
            flat = x.reshape(*x.shape[:-2], n * h)
            y = jnp.dot(flat, kernel.reshape(n * h, d), precision=self.precision)
            out_shape, out_axes = self.shape[2:], self.axes[2:]
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), out_axes),
                out_shape,
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return y


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with 3D kernels `query/key/value [D, N, H]`, `out [N, H, D]`.

    Cached decoding (`decode=True`): the first call creates the cache (self-attention: zero
    `[B, N, H, S_max]` keys/values; cross-attention: the projected encoder keys/values
    `[B, N, H, S]`, computed once); later calls write the new keys at `cache_position`
    (self-attention) or reuse the stored encoder keys/values (cross-attention). With rotary,
    keys are cached rotated. The cache's axis order is the module docstring's "bnhs".

    Attributes:
      num_heads: N.
      head_dim: H.
      features: D, the width of the inputs and of the output.
      dropout_rate: Dropout on the attention probabilities.
      dtype: Compute dtype (scores and softmax are a float32 island regardless).
      param_dtype: Storage dtype of the projections.
      precision: `lax.Precision` of every matmul.
      use_bias: Biases on the four projections (T5 and CodeGen have none).
      init_std: Normal init std of all four kernels; None uses HF T5's fan-in init: query
        `(D*H)**-0.5` (T5's folded 1/sqrt(H)), key/value `D**-0.5`, out `(N*H)**-0.5`.
      score_scale: Factor on the scores (CodeGen: `H**-0.5`); None for T5 (folded in the init).
      rotary_dim: When set, rotary embedding (`positions.apply_rotary`) of the first
        `rotary_dim` dims of each query and key head at `q_positions` / `kv_positions`.
      rotary_base: Rotary frequency base.
      is_cross_attention: Keys/values come from the encoder (cached once when decoding).
      implementation: `dot_product_attention` implementation (one of `IMPLEMENTATIONS`).
    """

    num_heads: int
    head_dim: int
    features: int
    dropout_rate: float = 0.0
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Precision = None
    use_bias: bool = False
    init_std: float | None = None
    score_scale: float | None = None
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    is_cross_attention: bool = False
    implementation: str = "plain"

    @nn.compact
    def __call__(
        self,
        inputs_q,
        inputs_kv,
        bias=None,
        mask=None,
        *,
        deterministic: bool = True,
        decode: bool = False,
        cache_position=None,
        q_positions=None,
        kv_positions=None,
    ):
        """[B, L, D], [B, S, D] -> [B, L, D].

        Args:
          inputs_q: `[B, L, D]` query inputs.
          inputs_kv: `[B, S, D]` key/value inputs (the same array for self-attention).
          bias: Optional additive score bias broadcastable to `[B, N, L, S]`.
          mask: Optional boolean mask broadcastable to `[B, N, L, S]`.
          deterministic: Disables dropout.
          decode: Use and update the `cache` collection.
          cache_position: Write offset of the new keys in the self-attention cache.
          q_positions: Rotary positions of the queries, int `[L]` or `[B, L]`; default
            `arange(L)`. Cached decoding passes `cache_position + arange(L)`.
          kv_positions: Rotary positions of the keys, as `q_positions`; default `arange(S)`.
        """
        d, n, h = self.features, self.num_heads, self.head_dim
        std = self.init_std
        proj = lambda shape, axes, stddev, name: Projection(  # noqa: E731
            shape,
            axes,
            stddev,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name=name,
        )
        axes_in = ("embed", "heads", "kv")
        query_proj = proj((d, n, h), axes_in, (d * h) ** -0.5 if std is None else std, "query")
        key_proj = proj((d, n, h), axes_in, d**-0.5 if std is None else std, "key")
        value_proj = proj((d, n, h), axes_in, d**-0.5 if std is None else std, "value")
        out_proj = proj(
            (n, h, d), ("heads", "kv", "embed"), (n * h) ** -0.5 if std is None else std, "out"
        )

        query = self._rotate(query_proj(inputs_q), q_positions)
        kv_layout = "bsnh"
        if decode and self.is_cross_attention:
            key, value = self._cached_encoder_kv(inputs_kv, key_proj, value_proj, kv_positions)
            kv_layout = "bnhs"
        else:
            key, value = self._rotate(key_proj(inputs_kv), kv_positions), value_proj(inputs_kv)
            if decode:
                key, value, kv_layout = self._update_self_cache(key, value, cache_position)

        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        out = dot_product_attention(
            query,
            key,
            value,
            bias,
            mask,
            dropout_rng=dropout_rng,
            dropout_rate=self.dropout_rate,
            deterministic=deterministic,
            dtype=self.dtype,
            precision=self.precision,
            scale=self.score_scale,
            implementation=self.implementation,
            kv_layout=kv_layout,
        )
        return out_proj(out)

    def _rotate(self, x, positions):
        """Rotary embedding of `[B, L, N, H]` at `positions` (default `arange(L)`), if enabled."""
        if self.rotary_dim is None:
            return x
        if positions is None:
            positions = jnp.arange(x.shape[1])
        return apply_rotary(x, positions, self.rotary_dim, self.rotary_base)

    def _cached_encoder_kv(self, inputs_kv, key_proj, value_proj, kv_positions):
        """Encoder keys/values `[B, N, H, S]`, projected once on the cache-creating call."""
        if self.has_variable("cache", "cached_key"):
            return self.get_variable("cache", "cached_key"), self.get_variable(
                "cache", "cached_value"
            )
        key = to_cache_layout(self._rotate(key_proj(inputs_kv), kv_positions))
        value = to_cache_layout(value_proj(inputs_kv))
        self.put_variable("cache", "cached_key", key)
        self.put_variable("cache", "cached_value", value)
        return key, value

    def _update_self_cache(self, key, value, cache_position):
        """Writes `[B, L, N, H]` new keys/values at `cache_position`.

        Returns:
          The keys, the values and their `kv_layout` ("bnhs"): the full `[B, N, H, S_max]`
          cache, or on the cache-creating call the new keys/values in that order.
        """
        initialized = self.has_variable("cache", "cached_key")
        key, value = to_cache_layout(key), to_cache_layout(value)
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        if not initialized:
            # Cache-creating call: shapes only; the caller attends over its own inputs.
            return key, value, "bnhs"
        start = (0, 0, 0, cache_position)
        cached_key.value = lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = lax.dynamic_update_slice(cached_value.value, value, start)
        return cached_key.value, cached_value.value, "bnhs"


def to_cache_layout(x):
    """`[B, S, N, H]` keys or values -> the decoding cache's `[B, N, H, S]`."""
    return jnp.transpose(x, (0, 2, 3, 1))
