"""Schedules (analytic values), trainable masks, weight-decay masks and microbatching."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codet5p_jax.train import optimizers, step


@pytest.mark.parametrize(
    "name,at,want",
    [
        # Warm-up: linear from 0 to the peak at step 10, for every schedule.
        ("constant", [0, 5, 10, 60], [0.0, 0.5, 1.0, 1.0]),
        ("linear", [0, 10, 60, 110], [0.0, 1.0, 0.5, 0.0]),
        ("cosine", [5, 10, 60, 110], [0.5, 1.0, 0.5, 0.0]),
        # T5's inverse square root, peak * sqrt(warmup / step) after warm-up: 1, 1/2, 1/3 at
        # steps 10, 40 (= 4 * 10), 90 (= 9 * 10).
        ("rsqrt", [5, 10, 40, 90], [0.5, 1.0, 0.5, 1 / 3]),
    ],
)
def test_schedules(name, at, want):
    sched = optimizers.make_schedule(name=name, peak_value=1.0, warmup_steps=10, total_steps=110)
    np.testing.assert_allclose([float(sched(s)) for s in at], want, rtol=1e-6, atol=1e-7)


def test_unknown_schedule_and_optimizer():
    with pytest.raises(ValueError, match="Unknown schedule 'step'"):
        optimizers.make_schedule(name="step")
    with pytest.raises(ValueError, match="Unknown optimizer 'sgd'"):
        optimizers.make_optimizer({"w": jnp.ones((2, 2))}, name="sgd", learning_rate=0.1)


def _params():
    z = lambda *s: jnp.ones(s)
    layer = {
        "self_attention": {"query": {"kernel": z(4, 2, 2)}},
        "encoder_decoder_attention": {"query": {"kernel": z(4, 2, 2)}},
        "pre_cross_attention_layer_norm": {"scale": z(4)},
        "mlp": {"wi": {"kernel": z(4, 8)}},
    }
    return {
        "token_embedder": {"embedding": z(10, 4)},
        "encoder": {
            "layers_0": {"mlp": {"wi": {"kernel": z(4, 8)}}},
            "encoder_norm": {"scale": z(4)},
        },
        "decoder": {"layers_0": layer},
    }


def test_encoder_and_cross_attention_mask_and_frozen_updates():
    params = _params()
    mask = optimizers.trainable_mask(params, "encoder_and_cross_attention")
    trained = {
        optimizers.param_path(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m
    }
    assert trained == {
        "encoder/layers_0/mlp/wi/kernel",
        "encoder/encoder_norm/scale",
        "decoder/layers_0/encoder_decoder_attention/query/kernel",
        "decoder/layers_0/pre_cross_attention_layer_norm/scale",
    }
    tx = optimizers.make_optimizer(
        params, learning_rate=0.1, trainable="encoder_and_cross_attention"
    )
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    for (path, old), changed in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(new), strict=True
    ):
        moved = not np.array_equal(np.asarray(old), np.asarray(changed))
        assert moved == (optimizers.param_path(path) in trained), path


def test_bad_trainable_presets():
    with pytest.raises(ValueError, match="Unknown trainable preset 'nope'"):
        optimizers.trainable_mask(_params(), "nope")
    with pytest.raises(ValueError, match="matches no parameter"):
        optimizers.trainable_mask({"x": jnp.ones(2)}, "heads_only")


def test_adamw_decays_matrices_only():
    """With zero gradients AdamW's update is -lr * wd * w on matrices and 0 on vectors."""
    params = {"w": jnp.full((2, 2), 2.0), "scale": jnp.full((2,), 2.0)}
    tx = optimizers.make_optimizer(params, learning_rate=0.5, weight_decay=0.1, clip_grad_norm=None)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.5 * 0.1 * 2.0)
    np.testing.assert_allclose(np.asarray(updates["scale"]), 0.0)


@pytest.mark.parametrize("name,moment,weight", [("adafactor", "v", 1.0), ("adamw", "nu", 1e-3)])
def test_optimizer_sees_clipped_gradients(name, moment, weight):
    """Gradients of 100 on 72 entries (global norm 100 * sqrt(72)) reach the optimizer clipped
    to norm 1: each is 1 / sqrt(72). Its first-step second moment is then `weight * g**2` with
    weight 1 for Adafactor (decay 1 - 1**-0.8 = 0 at step 1) and 1 - b2 for AdamW; unclipped
    it would be 1e4 times larger. Adafactor's first update is -lr * rms(param) = -0.01."""
    params = {"w": jnp.ones((8, 8)), "b": jnp.ones((8,))}
    grads = jax.tree.map(lambda p: 100 * p, params)
    kw = dict(learning_rate=0.01, weight_decay=0.0)
    tx = optimizers.make_optimizer(params, name=name, clip_grad_norm=1.0, **kw)
    updates, state = tx.update(grads, tx.init(params), params)
    for leaf in jax.tree.leaves(optax.tree_utils.tree_get(state, moment)):
        np.testing.assert_allclose(np.asarray(leaf), weight / 72, rtol=1e-6)
    if name == "adafactor":
        for leaf in jax.tree.leaves(updates):
            np.testing.assert_allclose(np.asarray(leaf), -0.01, rtol=1e-6)
    # Without clipping the optimizer sees the raw gradients.
    tx = optimizers.make_optimizer(params, name=name, clip_grad_norm=None, **kw)
    _, state = tx.update(grads, tx.init(params), params)
    for leaf in jax.tree.leaves(optax.tree_utils.tree_get(state, moment)):
        np.testing.assert_allclose(np.asarray(leaf), weight * 100.0**2, rtol=1e-6)


def test_microbatched_gradients_equal_full_batch():
    """Mean of per-microbatch mean-loss gradients == full-batch gradient for equal-size slices."""

    def loss_fn(params, extra, batch, rng, enable_dropout=True):
        pred = batch["x"] @ params["w"]
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, ({"loss": loss}, extra)

    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(8, 3)).astype(np.float32)}
    batch["y"] = rng.normal(size=(8, 2)).astype(np.float32)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    full = step.accumulate_gradients(loss_fn, params, {}, batch, jax.random.key(0), 1)
    micro = step.accumulate_gradients(loss_fn, params, {}, batch, jax.random.key(0), 4)
    np.testing.assert_allclose(float(micro[0]), float(full[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(micro[1]["w"]), np.asarray(full[1]["w"]), rtol=1e-5)
    with pytest.raises(ValueError, match="not divisible into 3 microbatches"):
        step.accumulate_gradients(loss_fn, params, {}, batch, jax.random.key(0), 3)


def test_train_step_metrics_and_step_counter():
    def loss_fn(params, extra, batch, rng, enable_dropout=True):
        loss = jnp.sum(params["w"] ** 2)
        return loss, ({"loss": loss}, extra)

    params = {"w": jnp.full((2, 2), 3.0)}
    tx = optimizers.make_optimizer(params, learning_rate=0.1, clip_grad_norm=None)
    from codet5p_jax.train.state import TrainState

    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), extra={}
    )
    new, metrics = step.train_step(
        state, {}, jax.random.key(0), loss_fn=loss_fn, tx=tx, learning_rate_fn=lambda s: 0.1
    )
    assert int(new.step) == 1
    np.testing.assert_allclose(float(metrics["grad_norm"]), np.sqrt(4 * 6.0**2), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["loss"]), 36.0)
    assert float(metrics["learning_rate"]) == pytest.approx(0.1)
