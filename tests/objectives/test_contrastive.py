"""Stage-2 loss pieces against plain-numpy references written out here (ALBEF/BLIP formulas)."""

import numpy as np
import pytest

from codet5p_jax.objectives import contrastive as C

TOL = dict(rtol=1e-5, atol=1e-5)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    b, q, e = 4, 8, 16
    return dict(
        query=_unit(rng.normal(size=(b, e))).astype(np.float32),
        batch=_unit(rng.normal(size=(b, e))).astype(np.float32),
        queue=_unit(rng.normal(size=(q, e))).astype(np.float32),
        b=b,
        q=q,
    )


def test_info_nce_with_queue_matches_numpy(feats):
    temp = 0.07
    cands = np.concatenate([feats["batch"], feats["queue"]])
    b, k = feats["b"], cands.shape[0]
    valid = np.ones(k, bool)
    valid[-3:] = False  # three unwritten queue slots
    ids = np.array([5, -1, 7, 9])
    cand_ids = np.concatenate([ids, np.array([5, -1, 3, 3, 7, -1, -1, -1])])
    positives = C.positive_mask(ids, cand_ids)
    # numpy: positives are the diagonal plus queued copies with the same non-negative id.
    np_pos = (ids[:, None] == cand_ids[None]) & (ids[:, None] >= 0)
    np_pos[np.arange(b), np.arange(b)] = True
    np.testing.assert_array_equal(np.asarray(positives), np_pos)

    targets = C.contrastive_targets(positives, valid)
    loss = C.info_nce(feats["query"], cands, targets, temp, valid)

    # numpy: softmax over the valid columns only; targets uniform over valid positives.
    logits = (feats["query"] @ cands.T / temp)[:, valid]
    hard = np_pos[:, valid].astype(np.float64)
    hard /= hard.sum(-1, keepdims=True)
    expected = -np.mean(np.sum(hard * _np_log_softmax(logits), -1))
    np.testing.assert_allclose(float(loss), expected, **TOL)


def test_soft_targets_mix_momentum_softmax(feats):
    temp, alpha = 0.1, 0.4
    cands = np.concatenate([feats["batch"], feats["queue"]])
    valid = np.ones(cands.shape[0], bool)
    momentum_logits = feats["batch"] @ cands.T / temp
    positives = C.positive_mask(np.full(4, -1), np.full(cands.shape[0], -1))
    targets = C.contrastive_targets(positives, valid, momentum_logits, alpha)
    soft = np.exp(_np_log_softmax(momentum_logits))
    expected = alpha * soft + (1 - alpha) * np.eye(4, cands.shape[0])
    np.testing.assert_allclose(np.asarray(targets), expected, **TOL)
    loss = C.info_nce(feats["query"], cands, targets, temp, valid)
    ref = -np.mean(np.sum(expected * _np_log_softmax(feats["query"] @ cands.T / temp), -1))
    np.testing.assert_allclose(float(loss), ref, **TOL)


def test_hard_negative_argmax_and_gumbel_sampling_match_numpy(feats):
    rng = np.random.default_rng(1)
    cands = np.concatenate([feats["batch"], feats["queue"]])
    sim = (feats["query"] @ cands.T / 0.07).astype(np.float32)
    positives = np.eye(4, cands.shape[0], dtype=bool)
    valid = np.ones(cands.shape[0], bool)
    valid[-2:] = False
    # Make the positive and an invalid slot the most similar so a wrong mask would pick them.
    sim[np.arange(4), np.arange(4)] = 100.0
    sim[:, -1] = 200.0
    allowed = ~positives & valid[None]
    got = C.select_hard_negatives(sim, positives, valid)
    np.testing.assert_array_equal(np.asarray(got), np.where(allowed, sim, -np.inf).argmax(-1))
    noise = rng.gumbel(size=sim.shape).astype(np.float32)
    got = C.select_hard_negatives(sim, positives, valid, noise)
    np.testing.assert_array_equal(
        np.asarray(got), np.where(allowed, sim + noise, -np.inf).argmax(-1)
    )
    assert not np.any(positives[np.arange(4), np.asarray(got)])


def test_gumbel_sampling_follows_softmax_over_negatives():
    # Gumbel-max must sample index j with probability softmax(sim)[j] over allowed columns.
    import jax

    sim = np.array([[0.0, 1.0, 2.0, 0.5]], np.float32)
    positives = np.array([[True, False, False, False]])
    n = 20000
    noise = np.asarray(jax.random.gumbel(jax.random.PRNGKey(0), (n, 4)))
    picks = np.asarray(
        C.select_hard_negatives(np.repeat(sim, n, 0), np.repeat(positives, n, 0), None, noise)
    )
    freq = np.bincount(picks, minlength=4) / n
    p = np.exp(sim[0, 1:]) / np.exp(sim[0, 1:]).sum()
    assert freq[0] == 0.0
    np.testing.assert_allclose(freq[1:], p, atol=0.015)


def test_matching_loss_matches_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 2)).astype(np.float32)
    labels = np.array([1, 1, 0, 0, 0, 0])
    got = C.matching_loss(logits, labels)
    expected = -np.mean(_np_log_softmax(logits.astype(np.float64))[np.arange(6), labels])
    np.testing.assert_allclose(float(got), expected, **TOL)


def test_ema_update_value():
    m = {"a": np.full((3,), 2.0, np.float32), "b": {"c": np.zeros((2, 2), np.float32)}}
    p = {"a": np.full((3,), 4.0, np.float32), "b": {"c": np.ones((2, 2), np.float32)}}
    out = C.ema_update(m, p, 0.995)
    np.testing.assert_allclose(np.asarray(out["a"]), 0.995 * 2.0 + 0.005 * 4.0, **TOL)
    np.testing.assert_allclose(np.asarray(out["b"]["c"]), 0.005, **TOL)


def test_enqueue_order_across_steps_is_a_ring_buffer():
    queue = np.zeros((6, 2), np.float32)
    ptr = 0
    reference = []  # numpy model: the last 6 items in arrival order, oldest overwritten first
    for step in range(5):
        items = np.full((2, 2), step + 1, np.float32) + np.array([[0.0], [0.5]], np.float32)
        queue, ptr = C.enqueue(queue, ptr, items)
        reference.extend(list(items))
        expected = np.zeros((6, 2), np.float32)
        for i, item in enumerate(reference):
            expected[i % 6] = item
        np.testing.assert_array_equal(np.asarray(queue), expected)
        assert int(ptr) == (2 * (step + 1)) % 6
    valid = C.queue_valid_mask(6, 4)
    np.testing.assert_array_equal(np.asarray(valid), [True] * 4 + [False] * 2)


def test_last_token_index_prefers_last_eos_and_falls_back_to_last_real_token():
    tokens = np.array([[1, 5, 2, 7, 2, 0], [1, 5, 6, 7, 8, 9], [1, 2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(C.last_token_index(tokens, 2)), [4, 5, 1])


@pytest.mark.parametrize("queue_size,batch", [(10, 4), (0, 4), (3, 4)])
def test_queue_size_not_divisible_by_batch_is_rejected(queue_size, batch):
    with pytest.raises(ValueError, match="multiple of the global batch size"):
        C.check_queue_size(queue_size, batch)
    with pytest.raises(ValueError, match="multiple of the global batch size"):
        C.enqueue(np.zeros((max(queue_size, 1), 2)), 0, np.zeros((batch, 2)))


def test_inverted_temperature_bounds_are_rejected():
    with pytest.raises(ValueError, match="lower < upper"):
        C.check_temperature_bounds(0.5, 0.001, 0.07)
    with pytest.raises(ValueError, match="outside"):
        C.check_temperature_bounds(0.001, 0.05, 0.07)
