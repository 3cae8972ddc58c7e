"""BimodalObjective: each loss against numpy on model outputs; queue/momentum semantics; bad input.

References are computed here in numpy from the network's own features/logits (obtained through
the public model API), so these tests check the objective's wiring: which features, which
negatives, which positives, which queue slots.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from testlib import BIMODAL_CODE_LENGTH, BIMODAL_TEXT_LENGTH, make_bimodal_batch

from codet5p_jax.config import get_preset
from codet5p_jax.models import build_model, init_params
from codet5p_jax.objectives.bimodal import TEMPERATURE_KEY, BimodalObjective

TOL = dict(rtol=1e-5, atol=1e-5)
B, Q = 4, 8
LT, LC = BIMODAL_TEXT_LENGTH, BIMODAL_CODE_LENGTH


@pytest.fixture(scope="module")
def setup():
    cfg = get_preset("tiny-bimodal")
    model = build_model(cfg)
    boxed = init_params(cfg, jax.random.PRNGKey(0))
    return model, boxed


def make_objective(model, **kw):
    kw = dict(queue_size=Q, alpha=0.0, sample_hard_negatives=False) | kw
    return BimodalObjective(model, **kw)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_features(model, params, tokens):
    return np.asarray(model.apply({"params": params}, tokens, method=model.embed), np.float64)


def _np_itm_logits(model, params, text, code):
    """Matching logits via encode / decode(return_hidden) / itm_logits, state at last </s>."""
    v = {"params": params}
    enc = model.apply(v, text, text != 0, method=model.encode)
    dec = np.array(code, copy=True)
    dec[:, 0] = 32100
    hidden = np.asarray(
        model.apply(v, enc, text != 0, dec, decoder_mask=code != 0, return_hidden=True,
                    method=model.decode)
    )  # fmt: skip
    eos = np.array([np.nonzero(row == 2)[0][-1] for row in code])
    states = hidden[np.arange(len(code)), eos]
    return np.asarray(model.apply(v, states, method=model.itm_logits), np.float64)


def _np_lm_loss(model, params, enc_tokens, batch, prefix):
    logits = np.asarray(
        model.apply({"params": params}, enc_tokens, batch[f"{prefix}_decoder_input_tokens"]),
        np.float64,
    )
    target, w = batch[f"{prefix}_decoder_target_tokens"], batch[f"{prefix}_decoder_loss_weights"]
    nll = -np.take_along_axis(_log_softmax(logits), target[..., None], -1)[..., 0]
    return (nll * w).sum() / w.sum()


def test_each_loss_matches_numpy_reference_on_first_and_second_step(setup):
    model, boxed = setup
    obj = make_objective(model)
    params = nn.unbox(obj.init_params(boxed))
    net = {k: v for k, v in params.items() if k != TEMPERATURE_KEY}
    extra = obj.init_extra_state(nn.unbox(boxed), jax.random.PRNGKey(1))
    temp = 0.07
    b1 = make_bimodal_batch(0, ids=[10, 11, 12, 13])
    loss_fn = jax.jit(lambda p, e, b: obj.loss_fn(p, e, b, jax.random.PRNGKey(2)))
    loss, (m, extra1) = loss_fn(params, extra, b1)

    # Step 1: momentum == online (EMA of identical trees), queue empty -> batch-only InfoNCE.
    tf, cf = (
        _np_features(model, net, b1["text_tokens"]),
        _np_features(model, net, b1["code_tokens"]),
    )
    sim = tf @ cf.T / temp
    itc = 0.5 * (-np.mean(np.diag(_log_softmax(sim))) - np.mean(np.diag(_log_softmax(sim.T))))
    np.testing.assert_allclose(float(m["loss_itc"]), itc, **TOL)

    # ITM: arg-max hard negatives off the diagonal, B positives + 2B negatives.
    masked = np.where(np.eye(B, dtype=bool), -np.inf, sim)
    neg_code, neg_text = masked.argmax(1), masked.T.argmax(1)
    t, c = b1["text_tokens"], b1["code_tokens"]
    logits = _np_itm_logits(
        model, net, np.concatenate([t, t, t[neg_text]]), np.concatenate([c, c[neg_code], c])
    )
    labels = np.array([1] * B + [0] * 2 * B)
    itm = -np.mean(_log_softmax(logits)[np.arange(3 * B), labels])
    np.testing.assert_allclose(float(m["loss_itm"]), itm, **TOL)

    t2c = _np_lm_loss(model, net, t, b1, "text_to_code")
    c2t = _np_lm_loss(model, net, c, b1, "code_to_text")
    np.testing.assert_allclose(float(m["loss_t2c"]), t2c, **TOL)
    np.testing.assert_allclose(float(m["loss_c2t"]), c2t, **TOL)
    np.testing.assert_allclose(float(loss), itc + itm + t2c + c2t, **TOL)

    # Step 2: batch 2 repeats pair 11 (same id): its queued copy is a second positive; the other
    # queued features are extra negatives; unwritten slots stay excluded.
    b2 = make_bimodal_batch(1, ids=[20, 11, 21, 22])
    b2["text_tokens"][1], b2["code_tokens"][1] = b1["text_tokens"][1], b1["code_tokens"][1]
    _, (m2, _) = loss_fn(params, extra1, b2)
    tq, cq = np.asarray(extra1["text_queue"])[:B], np.asarray(extra1["code_queue"])[:B]
    tf2, cf2 = (
        _np_features(model, net, b2["text_tokens"]),
        _np_features(model, net, b2["code_tokens"]),
    )
    pos = np.concatenate([np.eye(B), np.zeros((B, B))], 1)
    pos[1, B + 1] = 1.0
    pos /= pos.sum(1, keepdims=True)
    # Params are unchanged, so the EMA'd momentum params (and features) equal the online ones.
    s_t2c = tf2 @ np.concatenate([cf2, cq]).T / temp
    s_c2t = cf2 @ np.concatenate([tf2, tq]).T / temp
    itc2 = 0.5 * (
        -np.mean((pos * _log_softmax(s_t2c)).sum(1)) - np.mean((pos * _log_softmax(s_c2t)).sum(1))
    )
    np.testing.assert_allclose(float(m2["loss_itc"]), itc2, **TOL)


def test_soft_targets_use_momentum_similarity(setup):
    model, boxed = setup
    alpha = 0.4
    obj = make_objective(model, alpha=alpha, itm_weight=0.0, t2c_weight=0.0, c2t_weight=0.0)
    params = nn.unbox(obj.init_params(boxed))
    net = {k: v for k, v in params.items() if k != TEMPERATURE_KEY}
    extra = obj.init_extra_state(nn.unbox(boxed), jax.random.PRNGKey(1))
    b = make_bimodal_batch(3)
    loss, (m, _) = obj.loss_fn(params, extra, b, jax.random.PRNGKey(0))
    tf, cf = _np_features(model, net, b["text_tokens"]), _np_features(model, net, b["code_tokens"])
    sim = tf @ cf.T / 0.07
    tgt_t2c = alpha * np.exp(_log_softmax(sim)) + (1 - alpha) * np.eye(B)
    tgt_c2t = alpha * np.exp(_log_softmax(sim.T)) + (1 - alpha) * np.eye(B)
    ref = 0.5 * (
        -np.mean((tgt_t2c * _log_softmax(sim)).sum(1))
        - np.mean((tgt_c2t * _log_softmax(sim.T)).sum(1))
    )
    np.testing.assert_allclose(float(loss), ref, **TOL)
    assert set(m) == {"temperature", "loss_itc", "itc_t2c_accuracy"}


def test_queue_order_and_ema_value_across_steps(setup):
    model, boxed = setup
    obj = make_objective(model, momentum=0.9)
    params = nn.unbox(obj.init_params(boxed))
    extra = obj.init_extra_state(nn.unbox(boxed), jax.random.PRNGKey(1))
    loss_fn = jax.jit(lambda p, e, b: obj.loss_fn(p, e, b, jax.random.PRNGKey(2)))
    momentum = jax.tree.map(np.asarray, extra["momentum_params"])
    written = []  # numpy model of the ring buffer: (slot, text feature, code feature)
    for step in range(3):
        # A fake optimizer update, so online and momentum params differ from step 2 on.
        params = jax.tree.map(lambda x, s=step: x + 0.01 * s, params)
        batch = make_bimodal_batch(10 + step, ids=np.arange(B) + 100 * step)
        _, (_, new) = loss_fn(params, extra, batch)
        online = {k: params[k] for k in momentum}
        momentum = jax.tree.map(lambda m, p: 0.9 * m + 0.1 * np.asarray(p), momentum, online)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(np.asarray(a), b, **TOL),
            new["momentum_params"],
            momentum,
        )
        mp = {**params, **momentum}
        tf = _np_features(model, mp, batch["text_tokens"])
        cf = _np_features(model, mp, batch["code_tokens"])
        start = (step * B) % Q
        written.append((start, tf, cf, batch["pair_ids"]))
        assert int(new["queue_ptr"]) == (start + B) % Q
        assert int(new["queue_filled"]) == min((step + 1) * B, Q)
        for slot, t, c, ids in written[-2:]:  # the live window: the last Q / B batches
            np.testing.assert_allclose(np.asarray(new["text_queue"])[slot : slot + B], t, **TOL)
            np.testing.assert_allclose(np.asarray(new["code_queue"])[slot : slot + B], c, **TOL)
            np.testing.assert_array_equal(np.asarray(new["id_queue"])[slot : slot + B], ids)
        extra = new
    # Step 3 overwrote slots [0, B): the first batch was dequeued.
    assert not np.isin(np.arange(B), np.asarray(extra["id_queue"])).any()


def test_hard_negatives_from_queue_come_from_the_queued_pairs(setup):
    """Step 2 mines its ITM negatives among the batch and the 4 pairs queued at step 1: the most
    similar non-positive candidate by the contrastive similarity, whose tokens come from the
    token queues. Two decoys must not be picked although they are the most similar candidates
    (cosine 1): row 1 repeats queued pair 11 (same id, so a positive) whose code tokens are its
    text tokens, and the unwritten queue slots 4..7 hold copies of batch 2's own features."""
    model, boxed = setup
    temp = 0.07
    obj = make_objective(model, hard_negatives_from_queue=True, text_length=LT, code_length=LC)
    params = nn.unbox(obj.init_params(boxed))
    net = {k: v for k, v in params.items() if k != TEMPERATURE_KEY}
    extra = obj.init_extra_state(nn.unbox(boxed), jax.random.PRNGKey(1))
    loss_fn = jax.jit(lambda p, e, b: obj.loss_fn(p, e, b, jax.random.PRNGKey(2)))
    b1 = make_bimodal_batch(4, ids=[10, 11, 12, 13])
    b1["code_tokens"][1] = np.pad(b1["text_tokens"][1], (0, LC - LT))
    _, (_, extra1) = loss_fn(params, extra, b1)
    np.testing.assert_array_equal(np.asarray(extra1["text_token_queue"])[:B], b1["text_tokens"])
    np.testing.assert_array_equal(np.asarray(extra1["code_token_queue"])[:B], b1["code_tokens"])
    b2 = make_bimodal_batch(5, ids=[20, 11, 21, 22])
    b2["text_tokens"][1], b2["code_tokens"][1] = b1["text_tokens"][1], b1["code_tokens"][1]

    # numpy: candidates are batch 2, then the queued batch 1 (momentum == online params here).
    t, c = b2["text_tokens"], b2["code_tokens"]
    cand_t, cand_c = np.concatenate([t, b1["text_tokens"]]), np.concatenate([c, b1["code_tokens"]])
    tf, cf = _np_features(model, net, cand_t), _np_features(model, net, cand_c)
    assert np.allclose(tf[1], cf[1], atol=1e-5) and np.allclose(tf[1], cf[B + 1], atol=1e-5)
    extra1 = dict(extra1)
    extra1["code_queue"] = extra1["code_queue"].at[B:].set(tf[:B])
    extra1["text_queue"] = extra1["text_queue"].at[B:].set(cf[:B])
    _, (m2, _) = loss_fn(params, extra1, b2)

    ids = np.array([20, 11, 21, 22, 10, 11, 12, 13])
    positive = (ids[:B, None] == ids[None, :]) | np.eye(B, 2 * B, dtype=bool)
    s_t2c = np.where(positive, -np.inf, tf[:B] @ cf.T / temp)
    s_c2t = np.where(positive, -np.inf, cf[:B] @ tf.T / temp)
    neg_code, neg_text = s_t2c.argmax(1), s_c2t.argmax(1)
    # The data exercise the queue: both directions pick queued pairs, each by a clear margin
    # over the best candidate with other tokens (pair 11's code is there twice: an exact tie).
    assert (neg_code >= B).any() and (neg_text >= B).any(), (neg_code, neg_text)
    for sim, picked, cand in ((s_t2c, neg_code, cand_c), (s_c2t, neg_text, cand_t)):
        for row, k in enumerate(picked):
            other = [j for j in range(2 * B) if not np.array_equal(cand[j], cand[k])]
            assert sim[row, k] - sim[row, other].max() > 1e-3
    logits = _np_itm_logits(
        model,
        net,
        np.concatenate([t, t, cand_t[neg_text]]),
        np.concatenate([c, cand_c[neg_code], c]),
    )
    labels = np.array([1] * B + [0] * 2 * B)
    itm = -np.mean(_log_softmax(logits)[np.arange(3 * B), labels])
    np.testing.assert_allclose(float(m2["loss_itm"]), itm, **TOL)


def test_boxed_extra_state_keeps_boxes_and_temperature_gets_gradient(setup):
    model, boxed = setup
    obj = make_objective(model)
    params = obj.init_params(boxed)
    extra = obj.init_extra_state(boxed, jax.random.PRNGKey(1))
    leaf = jax.tree.leaves(
        extra["momentum_params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)
    )[0]
    assert isinstance(leaf, nn.Partitioned)
    batch = make_bimodal_batch(5)
    grad_fn = jax.grad(lambda p: obj.loss_fn(p, extra, batch, jax.random.PRNGKey(0))[0])
    grads = grad_fn(nn.unbox(params))
    assert float(jnp.abs(grads[TEMPERATURE_KEY])) > 0.0
    _, (_, new) = obj.loss_fn(nn.unbox(params), extra, batch, jax.random.PRNGKey(0))
    new_leaf = jax.tree.leaves(
        new["momentum_params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)
    )[0]
    assert isinstance(new_leaf, nn.Partitioned) and new_leaf.names == leaf.names


def test_bad_configuration_and_batches_are_rejected(setup):
    model, boxed = setup
    with pytest.raises(ValueError, match="lower < upper"):
        BimodalObjective(model, temperature_min=0.5, temperature_max=0.01)
    obj = make_objective(model, queue_size=10)
    params = nn.unbox(obj.init_params(boxed))
    extra = obj.init_extra_state(nn.unbox(boxed), jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="queue_size=10 must be a positive multiple"):
        obj.loss_fn(params, extra, make_bimodal_batch(0), jax.random.PRNGKey(0))
    embed_model = build_model(
        get_preset("tiny-bimodal").replace(kind="embedding", num_decoder_layers=0)
    )
    with pytest.raises(ValueError, match="needs a bimodal model"):
        BimodalObjective(embed_model)
    with pytest.raises(ValueError, match="needs a projection head"):
        BimodalObjective(build_model(get_preset("tiny")))


def test_temperature_gradient_treats_soft_targets_as_constants(setup):
    # Analytic numpy gradient of InfoNCE w.r.t. the temperature T with fixed targets t:
    # dL/dT = mean_rows sum_k t_k (s_k - E_p[s]) / T^2, with s the cosine similarities.
    model, boxed = setup
    alpha, temp = 0.4, 0.07
    obj = make_objective(model, alpha=alpha, itm_weight=0.0, t2c_weight=0.0, c2t_weight=0.0)
    params = nn.unbox(obj.init_params(boxed))
    net = {k: v for k, v in params.items() if k != TEMPERATURE_KEY}
    extra = obj.init_extra_state(nn.unbox(boxed), jax.random.PRNGKey(1))
    b = make_bimodal_batch(6)
    grads = jax.grad(lambda p: obj.loss_fn(p, extra, b, jax.random.PRNGKey(0))[0])(params)
    tf, cf = _np_features(model, net, b["text_tokens"]), _np_features(model, net, b["code_tokens"])

    def side(sim):
        p = np.exp(_log_softmax(sim / temp))
        targets = alpha * p + (1 - alpha) * np.eye(B)  # momentum == online at step 1
        expected_s = (p * sim).sum(1, keepdims=True)
        return np.mean((targets * (sim - expected_s)).sum(1)) / temp**2

    sim = tf @ cf.T
    expected = 0.5 * (side(sim) + side(sim.T))
    np.testing.assert_allclose(float(grads[TEMPERATURE_KEY]), expected, rtol=1e-4, atol=1e-6)
