"""Weighted cross-entropy, accuracy and per-objective metrics against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codet5p_jax.objectives import losses
from codet5p_jax.objectives.seq2seq import Seq2SeqObjective


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
    targets = rng.integers(0, 11, (3, 5)).astype(np.int32)
    weights = (rng.random((3, 5)) > 0.3).astype(np.int32)
    return logits, targets, weights


def test_cross_entropy_matches_numpy(data):
    logits, targets, weights = data
    got, z = losses.compute_weighted_cross_entropy(logits, targets, weights)
    logp = _np_log_softmax(logits.astype(np.float64))
    want = -np.take_along_axis(logp, targets[..., None], -1)[..., 0] * weights
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(z).sum()) == 0.0


def test_label_smoothing_and_z_loss_match_numpy(data):
    logits, targets, weights = data
    ls, zc = 0.1, 1e-3
    got, z = losses.compute_weighted_cross_entropy(
        logits, targets, weights, label_smoothing=ls, z_loss=zc
    )
    v = logits.shape[-1]
    conf, low = 1 - ls, ls / (v - 1)
    soft = np.full(logits.shape, low)
    np.put_along_axis(soft, targets[..., None], conf, -1)
    logp = _np_log_softmax(logits.astype(np.float64))
    entropy = -(conf * np.log(conf) + (v - 1) * low * np.log(low))
    log_z = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    want_z = zc * log_z**2 * weights
    want = (-(soft * logp).sum(-1) - entropy) * weights + want_z
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(z), want_z, rtol=1e-5, atol=1e-9)


def test_accuracy_and_group_sums(data):
    logits, targets, weights = data
    acc = losses.compute_weighted_accuracy(logits, targets, weights)
    want = (logits.argmax(-1) == targets) * weights
    np.testing.assert_array_equal(np.asarray(acc), want)
    groups = np.array([2, 0, 2])
    sums = losses.sum_by_group(jnp.asarray(want, jnp.float32), groups, 3)
    np.testing.assert_allclose(
        np.asarray(sums), [want[1].sum(), 0.0, want[0].sum() + want[2].sum()]
    )


class _FixedLogits:
    """Stands in for the network: returns the given logits (the objective's math under test)."""

    class config:  # noqa: N801 - mimics T5Config's attribute
        has_decoder = True
        kind = "t5"

    def __init__(self, logits):
        self._logits = logits

    def decode(self, *args, **kwargs):  # the objective checks the network has a token decoder
        raise AssertionError("the whole-logits loss calls apply, not decode")

    def apply(self, variables, enc, dec, enable_dropout=False, rngs=None):
        return jnp.asarray(self._logits)


def test_seq2seq_objective_metrics_per_objective(data):
    logits, targets, weights = data
    objective = Seq2SeqObjective(_FixedLogits(logits))
    ids = np.array([0, 2, 0], np.int32)
    batch = {
        "encoder_input_tokens": np.ones((3, 4), np.int32),
        "decoder_input_tokens": np.ones((3, 5), np.int32),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": weights,
        "objective_ids": ids,
    }
    loss, (metrics, extra) = objective.loss_fn({}, {}, batch, jax.random.key(0))
    logp = _np_log_softmax(logits.astype(np.float64))
    tok = -np.take_along_axis(logp, targets[..., None], -1)[..., 0] * weights
    np.testing.assert_allclose(float(loss), tok.sum() / weights.sum(), rtol=1e-6)
    rows = ids == 0
    np.testing.assert_allclose(
        float(metrics["loss/span_denoising"]), tok[rows].sum() / weights[rows].sum(), rtol=1e-6
    )
    assert float(metrics["tokens/seq2seq_clm"]) == 0.0  # absent objective: zero tokens
    assert float(metrics["loss/seq2seq_clm"]) == 0.0
    assert float(metrics["tokens/decoder_clm"]) == weights[1].sum()
    assert extra == {}


def test_seq2seq_objective_rejects_encoder_only_model():
    class Enc:
        class config:  # noqa: N801
            has_decoder = False
            kind = "embedding"

    with pytest.raises(ValueError, match="needs an encoder-decoder model"):
        Seq2SeqObjective(Enc())
