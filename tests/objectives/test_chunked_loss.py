"""`Seq2SeqObjective(loss_chunk_tokens=...)` equals the whole-logits loss, without the logits.

Reference: the same objective computing the full `[B, T, V]` float32 logits (itself checked
against HF's loss in tests/train/test_stage1_loss.py). Loss, metrics and every parameter
gradient must agree at 1e-5 (float32), with a chunk size that does not divide `B * T`, zero
loss weights, label smoothing, z-loss and per-objective metrics; and no intermediate of the
chunked forward + backward pass may be as large as the full logits.
"""

import jax
import numpy as np
import pytest

from codet5p_jax.config import get_preset
from codet5p_jax.models import build_model, init_args
from codet5p_jax.objectives.seq2seq import Seq2SeqObjective

B, S, T = 3, 9, 7


@pytest.fixture(scope="module")
def setup():
    cfg = get_preset("tiny", dropout_rate=0.0)
    model = build_model(cfg)
    params = jax.jit(model.init)(jax.random.key(0), *init_args(cfg))["params"]
    params = jax.tree.map(
        lambda x: getattr(x, "value", x), params, is_leaf=lambda x: hasattr(x, "value")
    )
    rng = np.random.default_rng(0)
    targets = rng.integers(5, cfg.vocab_size, (B, T)).astype(np.int32)
    weights = np.ones((B, T), np.int32)
    weights[2, 4:] = 0
    batch = {
        "encoder_input_tokens": rng.integers(5, cfg.vocab_size, (B, S)).astype(np.int32),
        "decoder_input_tokens": np.concatenate([np.zeros((B, 1), np.int32), targets[:, :-1]], 1),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": weights,
        "objective_ids": np.array([0, 2, 2], np.int32),
    }
    return cfg, model, params, batch


def _loss_and_grad(objective, params, batch):
    def f(p):
        return objective.loss_fn(p, {}, batch, jax.random.key(1), enable_dropout=False)

    return jax.value_and_grad(f, has_aux=True)(params)


@pytest.mark.parametrize("chunk", [5, 21, 64])
def test_chunked_loss_metrics_and_grads_equal_whole_logits(setup, chunk):
    _, model, params, batch = setup
    kw = dict(label_smoothing=0.1, z_loss=1e-3)
    (loss, (metrics, _)), grads = _loss_and_grad(Seq2SeqObjective(model, **kw), params, batch)
    chunked = Seq2SeqObjective(model, loss_chunk_tokens=chunk, **kw)
    (c_loss, (c_metrics, _)), c_grads = _loss_and_grad(chunked, params, batch)
    np.testing.assert_allclose(c_loss, loss, rtol=1e-5)
    assert set(c_metrics) == set(metrics)
    for k in metrics:
        np.testing.assert_allclose(c_metrics[k], metrics[k], rtol=1e-5, atol=1e-7, err_msg=k)
    for (path, g), c in zip(
        jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(c_grads), strict=True
    ):
        np.testing.assert_allclose(c, g, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def _largest_logits(jaxpr, vocab: int) -> int:
    """Size of the largest intermediate with a trailing vocabulary axis (logits-like)."""
    sizes = [0]
    for eqn in jaxpr.eqns:
        shapes = [getattr(v.aval, "shape", ()) for v in eqn.outvars]
        sizes += [int(np.prod(s)) for s in shapes if s and s[-1] == vocab]
        for sub in jax.core.jaxprs_in_params(eqn.params):
            sizes.append(_largest_logits(sub, vocab))
    return max(sizes)


def test_chunked_loss_honours_an_explicit_encoder_mask(setup):
    """Instruction-tuning batches carry `encoder_input_mask` (padding that is a real token id
    in CodeGen's vocabulary); the chunked path must hide those positions as the whole-logits
    path does, not fall back to `tokens != pad`."""
    _, model, params, batch = setup
    masked = dict(batch, encoder_input_mask=np.ones_like(batch["encoder_input_tokens"]))
    masked["encoder_input_mask"][1, 5:] = 0  # non-pad ids under the mask
    (loss, _), _ = _loss_and_grad(Seq2SeqObjective(model), params, masked)
    (unmasked, _), _ = _loss_and_grad(Seq2SeqObjective(model), params, batch)
    assert abs(float(loss) - float(unmasked)) > 1e-4  # the mask matters for this batch
    (c_loss, _), _ = _loss_and_grad(Seq2SeqObjective(model, loss_chunk_tokens=5), params, masked)
    np.testing.assert_allclose(c_loss, loss, rtol=1e-5)


def test_no_full_logits_exist(setup):
    cfg, model, params, batch = setup
    full = B * T * cfg.vocab_size

    def grad_fn(objective):
        return jax.make_jaxpr(lambda p: _loss_and_grad(objective, p, batch))(params).jaxpr

    v = cfg.vocab_size
    assert _largest_logits(grad_fn(Seq2SeqObjective(model)), v) >= full  # the check can fail
    assert _largest_logits(grad_fn(Seq2SeqObjective(model, loss_chunk_tokens=5)), v) <= 5 * v


def test_bad_chunk_size_is_one_clear_error(setup):
    with pytest.raises(ValueError, match="loss_chunk_tokens must be >= 1"):
        Seq2SeqObjective(setup[1], loss_chunk_tokens=0)
