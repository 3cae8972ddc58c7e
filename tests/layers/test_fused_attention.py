"""The fused attention path (`jax.nn.dot_product_attention`) equals the plain reference path.

On the CPU the fused code runs with `implementation="xla"`: the same bias folding, broadcasting
and scale handling that feed cuDNN on a GPU, checked against the plain einsum path at the
simple-layer tolerance (1e-5, float32), forward and gradients (the relative-position bias is a
trained parameter, so its gradient must flow through the fused call).
"""

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codet5p_jax.config import get_preset
from codet5p_jax.layers import attention
from codet5p_jax.models import build_model, init_args

B, L, S, N, H = 2, 6, 8, 3, 16
# Full float32 matmuls on every backend (GPUs would otherwise use TF32, beyond 1e-5).
HIGHEST = jax.lax.Precision.HIGHEST
ON_GPU = jax.default_backend() == "gpu"


def _inputs(seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(k[0], (B, L, N, H))
    key = jax.random.normal(k[1], (B, S, N, H))
    v = jax.random.normal(k[2], (B, S, N, H))
    bias = jax.random.normal(k[3], (1, N, L, S))
    pad = jnp.arange(S)[None, :] < jnp.array([[S], [S - 3]])  # row 1: 3 padded keys
    mask = pad[:, None, None, :]
    return q, key, v, bias, mask


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("use_mask", ["padding", "causal", None])
@pytest.mark.parametrize("scale", [None, 0.25])
def test_xla_fused_equals_plain(use_bias, use_mask, scale):
    q, k, v, bias, pad = _inputs()
    mask = {"padding": pad, "causal": jnp.tril(jnp.ones((L, S), bool))[None, None], None: None}
    mask = mask[use_mask]
    bias = bias if use_bias else None
    kw = dict(scale=scale, precision=HIGHEST)
    plain = attention.dot_product_attention(q, k, v, bias, mask, **kw)
    fused = attention.dot_product_attention(q, k, v, bias, mask, implementation="xla", **kw)
    np.testing.assert_allclose(fused, plain, atol=1e-5, rtol=1e-5)


def test_xla_fused_gradients_equal_plain():
    q, k, v, bias, mask = _inputs(1)

    def loss(impl, q, k, v, bias):
        out = attention.dot_product_attention(
            q, k, v, bias, mask, implementation=impl, precision=HIGHEST
        )
        return jnp.sum(jnp.sin(out))

    plain = jax.grad(lambda *a: loss("plain", *a), argnums=(0, 1, 2, 3))(q, k, v, bias)
    fused = jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2, 3))(q, k, v, bias)
    for p, f in zip(plain, fused, strict=True):
        np.testing.assert_allclose(f, p, atol=1e-5, rtol=1e-5)
    assert float(jnp.abs(fused[3]).sum()) > 0  # the bias gradient is not silently dropped


def test_cudnn_off_gpu_falls_back_with_one_log_line(caplog):
    q, k, v, bias, mask = _inputs()
    attention._log_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger=attention.__name__):
        out = [
            attention.dot_product_attention(q, k, v, bias, mask, implementation="cudnn")
            for _ in range(3)
        ]
    plain = attention.dot_product_attention(q, k, v, bias, mask)
    np.testing.assert_array_equal(out[0], plain)
    lines = [r.getMessage() for r in caplog.records]
    reason = "bf16/fp16" if ON_GPU else "needs a GPU"  # float32 inputs on a GPU
    assert len(lines) == 1 and reason in lines[0] and "plain" in lines[0], lines


@pytest.mark.skipif(ON_GPU, reason="what 'auto' does off a GPU")
def test_auto_off_gpu_is_plain_and_silent(caplog):
    q, k, v, bias, mask = _inputs()
    attention._log_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger=attention.__name__):
        out = attention.dot_product_attention(q, k, v, bias, mask, implementation="auto")
    np.testing.assert_array_equal(out, attention.dot_product_attention(q, k, v, bias, mask))
    assert not caplog.records


@pytest.mark.parametrize(
    "q_dtype,head_dim,lengths,expect",
    [
        (jnp.float32, 16, (6, 8), "bf16/fp16"),
        (jnp.bfloat16, 12, (6, 8), "head_dim"),
        (jnp.bfloat16, 16, (5, 8), "even lengths"),
        (jnp.bfloat16, 16, (6, 8), None),
    ],
)
def test_cudnn_support_rules(monkeypatch, q_dtype, head_dim, lengths, expect):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    q = jax.ShapeDtypeStruct((B, lengths[0], N, head_dim), q_dtype)
    k = jax.ShapeDtypeStruct((B, lengths[1], N, head_dim), q_dtype)
    reason = attention.fused_unsupported_reason("cudnn", q, k, has_bias=True, dropout=False)
    assert (reason is None) if expect is None else (expect in reason), reason


def test_unknown_implementation_is_one_clear_error():
    q, k, v, _, _ = _inputs()
    with pytest.raises(ValueError, match="Unknown attention implementation 'flash'"):
        attention.dot_product_attention(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="attention_impl"):
        get_preset("tiny", attention_impl="flash")


def test_whole_model_fused_equals_plain_logits_and_grads():
    """The tiny T5 (padding, causal and cross masks, both relative biases) agrees at 1e-4."""
    cfg = get_preset("tiny", dropout_rate=0.0)
    params = jax.jit(build_model(cfg).init)(jax.random.key(0), *init_args(cfg))["params"]
    rng = np.random.default_rng(0)
    enc = rng.integers(5, cfg.vocab_size, (2, 10)).astype(np.int32)
    enc[1, 7:] = 0  # padding
    dec = rng.integers(5, cfg.vocab_size, (2, 6)).astype(np.int32)

    def loss(impl, p):
        model = build_model(cfg.replace(attention_impl=impl))
        return jnp.mean(jnp.square(model.apply({"params": p}, enc, dec)))

    plain_val, plain_grad = jax.value_and_grad(lambda p: loss("plain", p))(params)
    fused_val, fused_grad = jax.value_and_grad(lambda p: loss("xla", p))(params)
    np.testing.assert_allclose(fused_val, plain_val, rtol=1e-4)
    for (path, p), f in zip(
        jax.tree_util.tree_leaves_with_path(plain_grad), jax.tree.leaves(fused_grad), strict=True
    ):
        np.testing.assert_allclose(f, p, atol=1e-4, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_cached_greedy_decoding_with_the_fused_path_equals_plain():
    """`generate` over the `[B, N, H, S]` cache with `attention_impl="xla"` (which takes
    one-token steps too) emits the plain path's tokens."""
    from codet5p_jax.decoding.generate import generate  # noqa: PLC0415

    cfg = get_preset("tiny", dropout_rate=0.0)
    params = jax.jit(build_model(cfg).init)(jax.random.key(1), *init_args(cfg))["params"]
    params = nn.unbox(params)
    ids = np.random.default_rng(1).integers(5, cfg.vocab_size, (2, 9)).astype(np.int32)
    prefix = np.array([[7, 8, 9], [7, 8, 0]], np.int32)  # a prefill of 3, then a forced token
    out = {
        impl: generate(
            build_model(cfg.replace(attention_impl=impl)), params, ids, max_new_tokens=6,
            decoder_prefix_ids=prefix, buckets=None,
        ).tokens
        for impl in ("plain", "xla")
    }  # fmt: skip
    np.testing.assert_array_equal(out["xla"], out["plain"])


def _reduced_precision_errors(implementation, dtype):
    """Relative L2 errors of a fused call's output and q/k/v/bias gradients in `dtype`.

    Reference: the plain path in float32 on the same `dtype`-rounded inputs (the bias too: the
    fused path hands the kernel a bias of the input dtype), so what remains is the kernel's own
    reduced-precision arithmetic.
    """
    b, q_len, s, n, h = 2, 64, 128, 4, 64
    k = jax.random.split(jax.random.key(3), 4)
    q, key, v = (
        jax.random.normal(k[i], (b, x, n, h)).astype(dtype) for i, x in enumerate((q_len, s, s))
    )
    bias = jax.random.normal(k[3], (1, n, q_len, s)).astype(dtype).astype(jnp.float32)
    mask = (jnp.arange(s)[None, :] < jnp.array([[s], [s - 30]]))[:, None, None, :]

    def loss(impl, q, key, v, bias):
        out = attention.dot_product_attention(q, key, v, bias, mask, implementation=impl)
        return jnp.sum(jnp.sin(out.astype(jnp.float32))), out

    grad = functools.partial(jax.value_and_grad, argnums=(0, 1, 2, 3), has_aux=True)
    upcast = [x.astype(jnp.float32) for x in (q, key, v)]
    (_, ref_out), ref = grad(lambda *a: loss("plain", *a))(*upcast, bias)
    (_, got_out), got = grad(lambda *a: loss(implementation, *a))(q, key, v, bias)
    errors = {}
    for name, r, g in zip(
        ("out", "q", "k", "v", "bias"), (ref_out, *ref), (got_out, *got), strict=True
    ):
        r, g = np.asarray(r, np.float32), np.asarray(g, np.float32)
        errors[name] = float(np.linalg.norm(g - r) / np.linalg.norm(r))
    return errors


@pytest.mark.parametrize(
    "implementation",
    [
        "xla",
        pytest.param(
            "cudnn",
            marks=pytest.mark.skipif(not ON_GPU, reason="cuDNN attention runs on NVIDIA GPUs"),
        ),
    ],
)
def test_reduced_precision_gradients_are_rounding_not_defects(implementation):
    """bf16 / fp16 fused attention: output and q/k/v/bias gradients off only by rounding.

    Elementwise tolerances cannot tell rounding from a wrong gradient at bf16 (8-bit mantissa:
    single elements of the bias gradient are off by 0.06 on values of 0.5 on the H200 with
    cuDNN, and by 0.06-0.08 in dq / dk on the CPU with the XLA implementation). Two properties
    can: the relative L2 error is small (a wrong or unreduced gradient is off by O(1)), and it
    shrinks with the mantissa: fp16 carries 3 more bits, so rounding errors fall ~8x, while a
    systematic error stays. Measured on the CPU ("xla"): bf16 2.4e-3 to 3.3e-3, fp16 3.0e-4 to
    4.3e-4. The bias gradient is what trains T5's relative-position table.
    """
    bf16 = _reduced_precision_errors(implementation, jnp.bfloat16)
    fp16 = _reduced_precision_errors(implementation, jnp.float16)
    for name in bf16:
        assert bf16[name] < 2e-2, (name, bf16, fp16)
        assert fp16[name] < bf16[name] / 3, (name, bf16, fp16)


@pytest.mark.parametrize("implementation", ["plain", "xla"])
@pytest.mark.parametrize("q_len", [1, L])
def test_cache_layout_bnhs_equals_bsnh(implementation, q_len):
    """Keys/values in the decoding cache's `[B, N, H, S]` order give the same attention as in
    `[B, S, N, H]`, on the plain path (einsums over the cache) and the fused one (prefill
    calls transpose back to the kernel's order)."""
    q, key, v, bias, mask = _inputs()
    q, bias = q[:, :q_len], bias[:, :, :q_len]
    kw = dict(precision=HIGHEST, implementation=implementation)
    want = attention.dot_product_attention(q, key, v, bias, mask, **kw)
    cached = [attention.to_cache_layout(x) for x in (key, v)]
    got = attention.dot_product_attention(q, *cached, bias, mask, kv_layout="bnhs", **kw)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_unknown_kv_layout_is_one_clear_error():
    q, key, v, _, _ = _inputs()
    with pytest.raises(ValueError, match=r"Unknown key/value layout 'bshn'"):
        attention.dot_product_attention(q, key, v, kv_layout="bshn")
