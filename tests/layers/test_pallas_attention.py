"""The Pallas TPU flash-attention path equals the plain reference path.

The kernel is Mosaic code for TPUs; on the CPU it runs in Pallas's TPU interpret mode
(`pltpu.force_tpu_interpret_mode()`), which executes the same kernel bodies, tiling and custom
backward pass on the host. Checked in float32 against the plain einsum path at the simple-layer
tolerance (1e-5): outputs and gradients w.r.t. queries, keys, values and the additive bias (T5's
relative-position bias is trained through the kernel's `dab`), with padding masks, causal
decoder self-attention and cross-attention of unequal lengths; a whole tiny T5 at 1e-4.
"""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from codet5p_jax.config import get_preset
from codet5p_jax.layers import attention, masks, pallas_attention
from codet5p_jax.models import build_model, init_args

B, N, H = 2, 2, 16
HIGHEST = jax.lax.Precision.HIGHEST


@pytest.fixture
def interpret():
    with pltpu.force_tpu_interpret_mode():
        yield


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls that reach the kernel (a silent plain fallback would leave it at 0)."""
    calls = []
    real = pallas_attention.flash_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(pallas_attention, "flash_attention", spy)
    return calls


def _inputs(q_len, k_len, seed):
    # numpy, not jax.random: interpret mode is part of jit's cache key, so every eager jax op
    # of a new shape would be compiled again inside it.
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape, np.float32)  # noqa: E731
    q, key, v = normal(B, q_len, N, H), normal(B, k_len, N, H), normal(B, k_len, N, H)
    return q, key, v, normal(1, N, q_len, k_len), normal(B, q_len, N, H)


def _keys_mask(k_len, real_lengths):
    return masks.padding_mask(np.arange(k_len)[None, :] < np.array(real_lengths)[:, None])


# (q_len, k_len, mask, use_bias, scale); real key lengths per batch row in the masks. Most
# cases share one shape: interpret mode compiles a host program per kernel shape (the cost).
CASES = {
    "encoder_padding": (128, 128, lambda: _keys_mask(128, [128, 100]), True, None),
    "decoder_causal_padding": (
        128,
        128,
        lambda: np.tril(np.ones((128, 128), bool)) & _keys_mask(128, [128, 90]),
        True,
        None,
    ),
    # Two key blocks: the kernel's online softmax across blocks.
    "cross_unequal_lengths": (64, 256, lambda: _keys_mask(256, [256, 200]), False, None),
    # Row 1 has no real key at all: the plain path gives it uniform weights and no query, key
    # or bias gradient; the folded fill must do the same (and survive the kernel's scale).
    "scaled_all_keys_masked_row": (128, 128, lambda: _keys_mask(128, [128, 0]), True, 0.25),
    "scale_above_one": (128, 128, lambda: _keys_mask(128, [128, 0]), True, 2.0),
}
SLOW_CASES = {
    "two_query_blocks_two_key_blocks": (256, 256, lambda: _keys_mask(256, [256, 150]), True, None),
}
CASE_PARAMS = [*CASES, *(pytest.param(c, marks=pytest.mark.slow) for c in SLOW_CASES)]


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_pallas_equals_plain_outputs_and_gradients(interpret, kernel_calls, case):
    q_len, k_len, make_mask, use_bias, scale = {**CASES, **SLOW_CASES}[case]
    q, k, v, bias, cotangent = _inputs(q_len, k_len, seed=len(case))
    mask = make_mask()

    def run(impl):
        def f(q, k, v, bias):
            return attention.dot_product_attention(
                q, k, v, bias, mask, scale=scale, precision=HIGHEST, implementation=impl
            )

        args = (q, k, v, bias if use_bias else None)
        out, vjp = jax.vjp(jax.jit(f), *args)
        return out, vjp(cotangent)

    plain_out, plain_grads = run("plain")
    out, grads = run("pallas")
    assert len(kernel_calls) == 1
    np.testing.assert_allclose(out, plain_out, atol=1e-5, rtol=1e-5)
    names = ("query", "key", "value", "bias")
    for name, g, p in zip(names, grads, plain_grads, strict=True):
        if p is None:
            assert g is None
            continue
        np.testing.assert_allclose(g, p, atol=1e-5, rtol=1e-5, err_msg=name)
    if use_bias:
        assert float(jnp.abs(grads[3]).sum()) > 1.0  # the bias gradient is not dropped


def _kernel_dot_precisions(jaxpr, inside=False) -> list:
    """`precision` of every dot_general inside a `pallas_call` of `jaxpr` (nested included)."""
    out = []
    for eqn in jaxpr.eqns:
        if inside and eqn.primitive.name == "dot_general":
            out.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns"):
                    out += _kernel_dot_precisions(
                        sub, inside or eqn.primitive.name == "pallas_call"
                    )
    return out


def test_float32_request_reaches_forward_and_backward_kernels(interpret):
    """A float32 model's HIGHEST reaches every kernel dot, the backward kernels' too.

    The CPU computes float32 exactly either way; on a TPU a dot without it runs below float32.
    The backward kernels are traced when the gradient is taken, after the forward call.
    """
    q, k, v, bias, _ = _inputs(128, 128, seed=2)

    def loss(q, k, v, bias):
        out = attention.dot_product_attention(
            q, k, v, bias, implementation="pallas", precision=HIGHEST
        )
        return jnp.sum(out)

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2, 3)))(q, k, v, bias).jaxpr
    precisions = _kernel_dot_precisions(jaxpr)
    assert len(precisions) >= 5  # forward (2) and backward (dk/dv, dq) kernel dots
    assert set(precisions) == {(HIGHEST, HIGHEST)}, precisions


def test_whole_tiny_t5_pallas_equals_plain_logits(interpret, kernel_calls, caplog):
    """Encoder (padding + relative bias), causal decoder and cross-attention all on the kernel."""
    cfg = get_preset("tiny", dropout_rate=0.0)
    params = jax.jit(build_model(cfg).init)(jax.random.key(0), *init_args(cfg))["params"]
    rng = np.random.default_rng(0)
    enc = rng.integers(5, cfg.vocab_size, (2, 128)).astype(np.int32)
    enc[1, 77:] = 0  # padding
    dec = rng.integers(5, cfg.vocab_size, (2, 128)).astype(np.int32)

    def logits(impl):
        model = build_model(cfg.replace(attention_impl=impl))
        return jax.jit(model.apply)({"params": params}, enc, dec)

    plain = logits("plain")
    attention._log_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger=attention.__name__):
        fused = logits("pallas")
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    layers = cfg.num_encoder_layers + 2 * cfg.num_decoder_layers
    assert len(kernel_calls) == layers
    np.testing.assert_allclose(fused, plain, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_scanned_tiny_t5_pallas_equals_plain_loss_and_gradients(interpret):
    """Scanned layers: loss and every parameter gradient (relative-bias tables too) at 1e-4.

    Without remat: interpret mode runs the kernel through host callbacks, effects that
    `jax.checkpoint` refuses; on a TPU the kernel has none.
    """
    cfg = get_preset("tiny", dropout_rate=0.0, scan_layers=True)
    params = jax.jit(build_model(cfg).init)(jax.random.key(0), *init_args(cfg))["params"]
    rng = np.random.default_rng(1)
    enc = rng.integers(5, cfg.vocab_size, (2, 128)).astype(np.int32)
    enc[1, 77:] = 0
    dec = rng.integers(5, cfg.vocab_size, (2, 128)).astype(np.int32)

    def loss(impl, p):
        model = build_model(cfg.replace(attention_impl=impl))
        return jnp.mean(jnp.square(model.apply({"params": p}, enc, dec)))

    plain_val, plain_grad = jax.jit(jax.value_and_grad(lambda p: loss("plain", p)))(params)
    fused_val, fused_grad = jax.jit(jax.value_and_grad(lambda p: loss("pallas", p)))(params)
    np.testing.assert_allclose(fused_val, plain_val, rtol=1e-4)
    for (path, p), f in zip(
        jax.tree_util.tree_leaves_with_path(plain_grad), jax.tree.leaves(fused_grad), strict=True
    ):
        np.testing.assert_allclose(f, p, atol=1e-4, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_unsupported_length_falls_back_with_one_log_line(interpret, kernel_calls, caplog):
    """Two traces (two query lengths), one reason: one log line, and the plain result."""
    attention._log_fallback.cache_clear()
    call = jax.jit(functools.partial(attention.dot_product_attention, implementation="pallas"))
    with caplog.at_level(logging.WARNING, logger=attention.__name__):
        for q_len in (6, 10):
            q, k, v, bias, _ = _inputs(q_len, 8, seed=q_len)
            mask = _keys_mask(8, [8, 5])
            plain = jax.jit(attention.dot_product_attention)(q, k, v, bias, mask)
            np.testing.assert_array_equal(call(q, k, v, bias, mask), plain)
    assert not kernel_calls
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "key length divisible by 128, got 8" in lines[0], lines
    assert "plain" in lines[0]


def test_off_tpu_without_interpret_mode_falls_back():
    q = jax.ShapeDtypeStruct((B, 128, N, H), jnp.float32)
    reason = attention.fused_unsupported_reason("pallas", q, q, has_bias=True, dropout=False)
    assert "needs a TPU" in reason and jax.default_backend() in reason


@pytest.mark.parametrize(
    "dtype,head_dim,lengths,dropout,expect",
    [
        (jnp.float16, 16, (128, 128), False, "float32/bfloat16"),
        (jnp.float32, 192, (128, 128), False, "head_dim"),
        (jnp.float32, 16, (128, 100), False, "key length divisible by 128, got 100"),
        (jnp.float32, 16, (200, 128), False, "query length"),
        (jnp.float32, 16, (1, 128), False, "decoding step"),
        (jnp.float32, 16, (128, 128), True, "dropout"),
        (jnp.bfloat16, 16, (64, 256), False, None),
        (jnp.float32, 256, (256, 128), False, None),
        (jnp.bfloat16, 64, (5, 128), False, None),  # one full-length query block
    ],
)
def test_pallas_support_rules_on_tpu(monkeypatch, dtype, head_dim, lengths, dropout, expect):
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    q = jax.ShapeDtypeStruct((B, lengths[0], N, head_dim), dtype)
    k = jax.ShapeDtypeStruct((B, lengths[1], N, head_dim), dtype)
    for impl in ("pallas", "auto"):
        reason = attention.fused_unsupported_reason(impl, q, k, has_bias=True, dropout=dropout)
        assert (reason is None) if expect is None else (expect in reason), (impl, reason)


@pytest.mark.parametrize("backend,expect", [("tpu", "pallas"), ("gpu", "cudnn"), ("cpu", "plain")])
def test_auto_picks_pallas_on_tpu_only(monkeypatch, backend, expect):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert attention.resolve_implementation("auto") == expect
    assert attention.resolve_implementation("pallas") == "pallas"


def test_auto_on_cpu_stays_plain_in_interpret_mode(interpret, kernel_calls, caplog):
    """Interpret mode is a test vehicle, not a fast path: "auto" never picks it on a CPU."""
    q, k, v, bias, _ = _inputs(128, 128, seed=1)
    attention._log_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger=attention.__name__):
        out = attention.dot_product_attention(q, k, v, bias, implementation="auto")
    np.testing.assert_array_equal(out, attention.dot_product_attention(q, k, v, bias))
    assert not kernel_calls and not caplog.records


def test_block_sizes_divide_the_lengths_the_rules_accept():
    for q_len in (5, 64, 128, 384):
        sizes = pallas_attention.block_sizes(q_len)
        assert q_len % sizes.block_q == 0 and sizes.block_q <= 128
        assert sizes.block_k == sizes.block_k_dkv == sizes.block_k_dq == 128
        assert sizes.has_backward_blocks


def test_config_accepts_pallas():
    assert get_preset("tiny", attention_impl="pallas").attention_impl == "pallas"
