"""Window averaging, NaN detection, JSONL/TensorBoard output and the loss plot."""

import json

import numpy as np
import pytest

from codet5p_jax.train import metrics as metrics_writer


def test_average_window_weights_groups_by_tokens():
    rows = [
        {"loss": 2.0, "loss/a": 1.0, "tokens/a": 10.0, "grad_norm": 1.0},
        {"loss": 4.0, "loss/a": 4.0, "tokens/a": 30.0, "grad_norm": 3.0},
    ]
    out = metrics_writer.average_window(rows)
    assert out["loss"] == 3.0 and out["grad_norm"] == 2.0  # plain means over steps
    assert out["loss/a"] == pytest.approx((1.0 * 10 + 4.0 * 30) / 40)  # token-weighted
    assert out["tokens/a"] == 40.0  # a total over the window


def test_logger_writes_jsonl_events_and_plot(tmp_path):
    logger = metrics_writer.MetricsLogger(tmp_path, total_steps=4, tokens_per_step=100)
    for step in (2, 4):
        logger.log(
            step,
            [
                (step - 1, {"loss": np.float32(5.0 - step)}),
                (step, {"loss": np.float32(4.0 - step)}),
            ],
        )
    logger.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert [r["loss"] for r in rows] == [2.5, 0.5]
    assert rows[0]["tokens_per_second"] > 0
    assert list(tmp_path.glob("events.out.tfevents.*"))
    png = metrics_writer.plot_loss_curve(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "0.5000" in metrics_writer.summarize(tmp_path)


def test_nan_names_first_bad_step(tmp_path):
    logger = metrics_writer.MetricsLogger(None, total_steps=9, tokens_per_step=1)
    window = [
        (7, {"loss": np.float32(1.0)}),
        (8, {"loss": np.float32(np.nan)}),
        (9, {"loss": np.float32(np.inf)}),
    ]
    with pytest.raises(metrics_writer.NonFiniteLossError, match="Loss is nan at step 8"):
        logger.log(9, window)
