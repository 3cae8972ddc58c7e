"""Compute-efficient training (paper §3.3): frozen params stay bit-identical, in bfloat16, with no
optimizer state and no gradients; trainable ones move, in float32.

Runs the real trainer (gin, CLI flags) on the toy task with the T5 tiny model and its decoder
frozen except the cross-attention (`encoder_and_cross_attention`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import gin
from codet5p_jax.cli import gin_flags
from codet5p_jax.train import memory, trainable, trainer

PRESET = "--gin.make_optimizer.trainable='encoder_and_cross_attention'"


def _configure(toy_gin, model_dir, *extra):
    args = gin_flags.parse_args(
        [f"--gin_file={toy_gin}", f"--gin.MODEL_DIR='{model_dir}'", PRESET, *extra], "t", ""
    )
    gin_flags.parse_gin(args)


def _initial_params(setup):
    """The run's fresh init, recomputed from its own init function and key."""
    return jax.jit(lambda r: nn.unbox(setup.boxed_init(r)))(setup.rngs[0])


@pytest.fixture(scope="module")
def run(toy_gin, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("frozen")
    _configure(toy_gin, model_dir)
    try:
        setup = trainer.train(planner=lambda s, **kw: s)
        result = trainer.train()
    finally:
        gin.clear_config()
    return setup, _initial_params(setup), result


def _flat(tree):
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def test_frozen_bit_identical_trainable_changed(run):
    setup, before, result = run
    assert result["step"] == 6
    after = _flat(jax.device_get(result["state"].params))
    before = _flat(jax.device_get(before))
    frozen = {trainable.path_str(k) for k in setup.partition.frozen}
    trained = {trainable.path_str(k) for k in setup.partition.trainable}
    # The preset's groups: the whole encoder and the decoder's cross-attention train.
    assert trained and all(
        k.startswith("encoder/") or "encoder_decoder_attention" in k or "pre_cross" in k
        for k in trained
    )
    assert any(k.startswith("decoder/") for k in frozen) and "token_embedder/embedding" in frozen
    for key in frozen:
        assert after[key].dtype == jnp.bfloat16, key
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    for key in trained:
        assert after[key].dtype == np.float32, key
        assert not np.array_equal(after[key], before[key]), f"{key} did not train"


def test_no_optimizer_state_or_gradient_for_frozen(run):
    setup, _, result = run
    opt = result["state"].opt_state
    trained_count = memory.count(setup.partition.split(setup.abstract.params)[0])
    # AdamW keeps mu and nu: exactly two copies of the trainable subtree, nothing else sized.
    moments = [x for x in jax.tree.leaves(opt) if np.ndim(x) > 0]
    assert sum(int(np.size(x)) for x in moments) == 2 * trained_count
    report = memory.state_bytes(setup.abstract, setup.partition)
    # The analytic byte count: trainable float32 (4 B) + frozen bfloat16 (2 B); 1 device (dp).
    num_frozen = report["num_params"] - report["num_trainable"]
    assert report["params"] == 4 * report["num_trainable"] + 2 * num_frozen
    assert report["grads"] == 4 * report["num_trainable"]
    assert report["opt_state"] >= 8 * report["num_trainable"]  # mu + nu (+ scalar counts)
    assert report["opt_state"] < 8 * report["num_trainable"] + 64


def test_step_differentiates_only_the_trainable_subtree(run):
    """The jitted step's gradient tree (inspected via its jaxpr outputs) has no frozen leaf:
    the loss is differentiated w.r.t. `partition.split(params)[0]` only."""
    setup, params, _ = run
    trained, frozen = setup.partition.split(params)
    batch = {
        k: jnp.ones((8, 16), jnp.int32)
        for k in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
    }
    batch["decoder_loss_weights"] = batch["decoder_target_tokens"]

    def loss(t):
        return setup.objective.loss_fn(
            setup.partition.merge(t, frozen), {}, batch, jax.random.key(0), enable_dropout=False
        )[0]

    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        grads = jax.grad(loss)(trained)
    assert set(_flat(grads)) == {trainable.path_str(k) for k in setup.partition.trainable}


def test_trainer_prints_bytes_per_device(toy_gin, tmp_path, capsys):
    _configure(toy_gin, tmp_path / "r", "--gin.TRAIN_STEPS=1")
    try:
        trainer.train()
    finally:
        gin.clear_config()
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "per-device bytes" in x)
    assert "optimizer state" in line and "gradients" in line and "bfloat16" in line


def test_unknown_trainable_group_is_one_line(toy_gin, tmp_path, capsys):
    from codet5p_jax.cli.train import main

    status = main(
        [
            f"--gin_file={toy_gin}",
            f"--gin.MODEL_DIR='{tmp_path / 'x'}'",
            "--gin.make_optimizer.trainable='encoder+cross_atention'",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "cross_atention" in err[0]
    assert not (tmp_path / "x").exists()
