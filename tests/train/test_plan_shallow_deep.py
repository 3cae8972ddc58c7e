"""`codet5p plan` for the shallow_deep family: parameter counts and bytes equal the analytic
values derived from the config dimensions (FACTS §3.5 block layout), never from the model.

The 16B must-show (64 fake devices, in a subprocess that owns its device count) is `slow`; the
tiny preset checks the same arithmetic in the default tier.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from codet5p_jax.cli.plan import main
from codet5p_jax.models.shallow_deep_config import get_preset

REPO = pathlib.Path(__file__).resolve().parents[2]


def analytic_counts(cfg) -> tuple[int, int]:
    """(all parameters, trainable under `encoder_and_cross_attention`) from the dimensions.

    CodeGen block: ln_1 (weight, bias), bias-free fused qkv [3D, D] and out [D, D], MLP fc_in
    [F, D] + bias, fc_out [D, F] + bias; cross-attention (top L blocks): q [D, D], kv [2D, D],
    out [D, D], no biases; untied LM head with bias; final ln_f; enc_to_dec_proj [D, De] + bias.
    """
    v = cfg.vocab_size
    de, fe, d, f = cfg.encoder_emb_dim, cfg.encoder_mlp_dim, cfg.emb_dim, cfg.mlp_dim

    def block(width, mlp):
        return 2 * width + 4 * width * width + 2 * width * mlp + mlp + width

    encoder = v * de + cfg.num_encoder_layers * block(de, fe) + 2 * de
    proj = de * d + d
    cross = cfg.num_cross_attention_layers * 4 * d * d
    decoder = v * d + cfg.num_decoder_layers * block(d, f) + cross + 2 * d + v * d + v
    return encoder + proj + decoder, encoder + proj + cross


def test_released_16b_count_is_the_index_total():
    """FACTS §3.5: 16,493,680,640 parameters (x 2 bytes + the 55 causal-mask buffers = the
    released index's total_size 33,218,048,000)."""
    total, _ = analytic_counts(get_preset("codet5p-16b"))
    assert total == 16_493_680_640
    assert 2 * total + 55 * 2048 * 2048 == 33_218_048_000


def _check(plan, cfg):
    total, trained = analytic_counts(cfg)
    s = plan["state"]
    assert s["num_params"] == total and s["num_trainable"] == trained
    # Trainable float32 (4 B), frozen decoder bfloat16 (2 B).
    assert s["params_total"] == 4 * trained + 2 * (total - trained)
    assert s["params_trainable"] * plan["num_devices"] >= 4 * trained


def test_tiny_instruct_plan_counts(tmp_path, codegen_tokenizer_dir):
    out = tmp_path / "plan.json"
    status = main(
        [
            "--gin_file=gin/experiments/tiny_instruct.gin",
            "--num_devices=8",
            "--gin.BATCH_SIZE=8",
            "--gin.make_optimizer.trainable='encoder_and_cross_attention'",
            f"--json={out}",
        ]
    )
    assert status == 0
    _check(json.loads(out.read_text()), get_preset("tiny-shallow-deep"))


@pytest.mark.slow
def test_16b_plan_on_64_fake_devices(tmp_path):
    """gin/experiments/instruct_codet5p_16b.gin on 64 CPU devices (fsdp 16 x tensor 4):
    finishes (about 25 s of CPU) and fits 16 GiB per device by XLA's own accounting."""
    out = tmp_path / "plan.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    cmd = [
        sys.executable, "-m", "codet5p_jax.cli", "plan",
        "--gin_file=gin/experiments/instruct_codet5p_16b.gin", "--num_devices=64",
        "--hbm_gib=16", f"--json={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads(out.read_text())
    _check(plan, get_preset("codet5p-16b"))
    assert plan["num_devices"] == 64 and plan["mesh"] == {"data": 1, "fsdp": 16, "tensor": 4}
    assert "fits in 16 GiB" in proc.stdout
    assert plan["peak_bytes"] < 16 << 30
