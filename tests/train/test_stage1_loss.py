"""`gin/experiments/tiny_stage1.gin` on the bundled stdlib corpus: the loss really goes down."""

import json

import numpy as np

from codet5p_jax.cli.train import main


def test_tiny_stage1_loss_decreases(tmp_path):
    steps = 40
    code = main(
        [
            "--gin_file=gin/experiments/tiny_stage1.gin",
            f"--gin.MODEL_DIR='{tmp_path}'",
            f"--gin.TRAIN_STEPS={steps}",
            "--gin.train.log_every=1",
            "--gin.make_schedule.warmup_steps=10",
        ]
    )
    assert code == 0
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = np.array([r["loss"] for r in rows])
    assert len(losses) == steps
    # Untrained: about ln(32103) = 10.38 nats. A real decrease, not noise: > 1 nat within 40
    # steps, averaged over 5-step windows.
    assert abs(losses[:3].mean() - np.log(32103)) < 0.5
    assert losses[-5:].mean() < losses[:5].mean() - 1.0
    # All three stage-1 objectives were trained and reported.
    last = rows[-1]
    for name in ("span_denoising", "seq2seq_clm", "decoder_clm"):
        assert f"loss/{name}" in last
