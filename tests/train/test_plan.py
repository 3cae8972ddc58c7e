"""`codet5p plan` on the T5 family: parameter counts, per-device bytes and model FLOPs equal
analytic values derived from the config dimensions (never from the model), on 8 fake devices.
"""

import json

import jax
import jax.numpy as jnp
import pytest

from codet5p_jax.cli.plan import main
from codet5p_jax.config import get_preset
from codet5p_jax.train import flops

B, S, T = 8, 16, 16  # toy_run.gin: BATCH_SIZE, TASK_FEATURE_LENGTHS
VOCAB = 512  # toy_run.gin: get_preset.vocab_size


def t5_counts(cfg):
    """(all params, relative-position tables) of a T5-family encoder-decoder from its dims."""
    d, nh, f, r = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.num_heads
    relpos = 2 * r * cfg.relative_attention_num_buckets
    enc_layer = 4 * d * nh + 2 * d * f + 2 * d
    dec_layer = 8 * d * nh + 2 * d * f + 3 * d
    total = VOCAB * d + relpos + cfg.num_encoder_layers * enc_layer + d
    total += cfg.num_decoder_layers * dec_layer + d
    return total, relpos


def t5_forward_flops(cfg):
    """Matmul FLOPs of one teacher-forced forward pass (2 per multiply-add)."""
    d, nh, f, h = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.head_dim
    n = cfg.num_heads
    enc = 2 * B * S * (4 * d * nh + 2 * d * f) + 2 * 2 * B * n * S * S * h
    dec_proj = 2 * B * T * (4 * d * nh + 2 * d * nh + 2 * d * f) + 2 * B * S * 2 * d * nh
    dec_attn = 2 * 2 * B * n * T * T * h + 2 * 2 * B * n * T * S * h
    logits = 2 * B * T * d * VOCAB
    return cfg.num_encoder_layers * enc + cfg.num_decoder_layers * (dec_proj + dec_attn) + logits


def _plan(toy_gin, tmp_path, *extra):
    out = tmp_path / "plan.json"
    status = main(
        [f"--gin_file={toy_gin}", "--num_devices=8", f"--json={out}", *extra]
    )  # fmt: skip
    assert status == 0
    return json.loads(out.read_text())


# The toy gin's stage-1 batches carry objective_ids: the objective's per-objective metrics are
# three `[B] @ one_hot [B, 3]` products (tokens, loss, accuracy), forward only.
METRIC_FLOPS = 3 * 2 * B * 3


def test_fsdp_plan_counts_equal_analytic(toy_gin, tmp_path, capsys):
    plan = _plan(toy_gin, tmp_path, "--gin_file=gin/partitioning/fsdp.gin")
    cfg = get_preset("tiny")
    total, relpos = t5_counts(cfg)
    state = plan["state"]
    assert state["num_params"] == total == state["num_trainable"]
    # fsdp over 8 devices: every leaf is split along `embed` except the [heads, buckets]
    # relative-position tables, which stay whole on every device; float32 everywhere.
    assert state["params"] == 4 * ((total - relpos) // 8 + relpos)
    assert state["grads"] == state["params"]
    assert state["opt_state"] >= 2 * state["params"]  # AdamW mu + nu
    # All trainable: each matmul's backward is two matmuls of the forward's size.
    assert plan["flops"] == 3 * t5_forward_flops(cfg) + METRIC_FLOPS
    assert plan["flops_per_device"] == pytest.approx(plan["flops"] / 8)
    assert plan["xla"]["temp"] > 0 and plan["num_devices"] == 8
    out = capsys.readouterr().out
    assert "XLA temp" in out and "optimizer state" in out and "model FLOPs per step" in out


def test_frozen_decoder_plan(toy_gin, tmp_path):
    """Frozen leaves: bfloat16 bytes, no gradient and no optimizer bytes; fewer FLOPs."""
    full = _plan(toy_gin, tmp_path)
    frozen = _plan(
        toy_gin, tmp_path, "--gin.make_optimizer.trainable='encoder_and_cross_attention'"
    )
    s = frozen["state"]
    num_frozen = s["num_params"] - s["num_trainable"]
    assert 0 < s["num_trainable"] < s["num_params"]
    assert s["params"] == 4 * s["num_trainable"] + 2 * num_frozen  # dp: whole tree per device
    assert s["grads"] == 4 * s["num_trainable"]
    assert frozen["flops"] < full["flops"]


def test_flop_counter_multiplies_scan_bodies_and_sees_pruned_backward():
    def f(w, x):
        y, _ = jax.lax.scan(lambda c, wi: (jnp.tanh(c @ wi), None), x, w)
        return jnp.sum(y)

    w = jax.ShapeDtypeStruct((5, 8, 8), jnp.float32)
    x = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    fwd = 5 * 2 * 4 * 8 * 8
    assert flops.count_flops(f, w, x) == (fwd, 0)
    assert flops.count_flops(jax.grad(f), w, x)[0] == 3 * fwd
    # Only the input trains: no weight gradients, so the backward is one matmul per layer.
    assert flops.count_flops(jax.grad(f, argnums=1), w, x)[0] == 2 * fwd


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--gin.make_optimizer.trainabel='all'", "trainabel"),
        ("--gin.BATCH_SIZE=7", "BATCH_SIZE=7"),
    ],
)
def test_bad_plan_input_is_one_line(toy_gin, flag, message, capsys):
    status = main([f"--gin_file={toy_gin}", "--num_devices=8", flag])
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("codet5p plan")]
    assert status == 2 and len(err) == 1 and message in err[0]


def test_wrong_device_count_in_process_is_one_line(toy_gin, capsys):
    status = main([f"--gin_file={toy_gin}", "--num_devices=64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--num_devices=64" in err[0]
