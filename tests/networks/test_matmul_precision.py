"""Every matmul of a float32 model asks for full float32; bfloat16 models keep the fast default.

Why: XLA runs float32 dots on GPUs as TF32 unless told otherwise. On an H200, 8 of the fp32
parity tests of test_encdec_parity.py failed at 1e-4 without this (logits up to 4.3e-3 off HF,
embedding vectors 3.6e-4), while PyTorch keeps matmuls in float32. CPUs always compute float32
exactly, so this file checks the request itself: the `precision` of each `dot_general` in the
traced forward and backward passes.
"""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from jax.extend import core as jcore

from codet5p_jax.config import get_preset
from codet5p_jax.models import build_model, init_args
from codet5p_jax.objectives.contrastive import similarity_logits

HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)


def _dot_precisions(jaxpr) -> list:
    """`precision` of every dot_general in `jaxpr`, including nested (scan, remat, jit) ones."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if isinstance(sub, jcore.ClosedJaxpr):
                    out += _dot_precisions(sub.jaxpr)
                elif isinstance(sub, jcore.Jaxpr):
                    out += _dot_precisions(sub)
    return out


def _model_dots(preset: str, dtype: str, scan: bool, attention: str = "plain") -> list:
    cfg = dataclasses.replace(
        get_preset(preset), dtype=dtype, scan_layers=scan, attention_impl=attention
    )
    model = build_model(cfg)
    args = init_args(cfg, batch=2, enc_len=8, dec_len=8)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))

    def loss(p):
        total = jnp.sum(model.apply(p, *args).astype(jnp.float32))
        if cfg.kind != "t5":  # the contrastive projection head
            total += jnp.sum(model.apply(p, args[0], method=model.embed))
        if cfg.kind == "bimodal":  # the matching head
            eos = jnp.ones((2, cfg.emb_dim), cfg.compute_dtype)
            total += jnp.sum(model.apply(p, eos, method=model.itm_logits))
        return total

    return _dot_precisions(jax.make_jaxpr(jax.value_and_grad(loss))(params).jaxpr)


@pytest.mark.parametrize("attention", ["plain", "xla"])  # xla: jax.nn's fused attention
@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("preset", ["tiny", "tiny-bimodal"])
def test_float32_models_request_full_precision(preset, scan, attention):
    precisions = _model_dots(preset, "float32", scan, attention)
    assert len(precisions) > 10  # forward and backward dots were found
    assert set(precisions) == {HIGHEST}


def test_embedding_model_requests_full_precision():
    cfg = dataclasses.replace(
        get_preset("tiny-bimodal"), kind="embedding", num_decoder_layers=0, name="tiny-emb"
    )
    model = build_model(cfg)
    (enc,) = init_args(cfg, batch=2, enc_len=8)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), enc))
    jaxpr = jax.make_jaxpr(lambda p: model.apply(p, enc))(params).jaxpr
    precisions = _dot_precisions(jaxpr)
    assert precisions and set(precisions) == {HIGHEST}


def test_bfloat16_models_keep_the_backend_default():
    precisions = _model_dots("tiny-bimodal", "bfloat16", scan=False)
    assert len(precisions) > 10
    assert HIGHEST not in precisions


def test_contrastive_logits_request_full_precision():
    q, c = jnp.ones((2, 4)), jnp.ones((3, 4))
    jaxpr = jax.make_jaxpr(lambda a, b: similarity_logits(a, b, 0.07))(q, c).jaxpr
    assert _dot_precisions(jaxpr) == [HIGHEST]
