"""`train.profile_steps` writes a profiler trace TensorBoard's profile plugin reads; the trainer
reports step / data-wait / checkpoint time and the badput."""

import json
import logging

import pytest

import gin
from codet5p_jax.cli import gin_flags
from codet5p_jax.train import trainer

STEPS, FIRST, LAST = 8, 3, 6


def _train(toy_gin, model_dir, *bindings):
    args = gin_flags.parse_args(
        [f"--gin_file={toy_gin}", f"--gin.MODEL_DIR='{model_dir}'", *bindings], "t", ""
    )
    gin_flags.parse_gin(args)
    try:
        return trainer.train()
    finally:
        gin.clear_config()


@pytest.fixture(scope="module")
def profiled(toy_gin, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("profiled")
    result = _train(
        toy_gin,
        model_dir,
        f"--gin.TRAIN_STEPS={STEPS}",
        f"--gin.train.profile_steps=({FIRST}, {LAST})",
        "--gin.train.plot=False",
    )
    return model_dir, result


def test_trace_is_an_xspace_of_the_profiled_steps(profiled):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    model_dir, _ = profiled
    # The layout TensorBoard's profile plugin lists: plugins/profile/<run>/<host>.xplane.pb
    traces = list(model_dir.glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1, list(model_dir.rglob("*"))
    space = xplane_pb2.XSpace.FromString(traces[0].read_bytes())
    # Each step is one `PjitFunction(jit(train_step))` span on the host's python line (the
    # profiler nests a second span of the same name inside it): count the outermost spans.
    spans = sorted(
        (event.offset_ps, event.offset_ps + event.duration_ps)
        for plane in space.planes
        for line in plane.lines
        for event in line.events
        if plane.event_metadata[event.metadata_id].name == "PjitFunction(jit(train_step))"
    )
    outermost, end = 0, -1
    for start, stop in spans:
        if start >= end:
            outermost, end = outermost + 1, stop
    assert outermost == LAST - FIRST, spans  # the steps FIRST..LAST-1, no more


def test_timing_is_logged_per_window_and_summed_at_the_end(profiled):
    model_dir, result = profiled
    rows = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for row in rows:
        assert row["time/step_s"] > 0 and row["time/data_s"] > 0 and row["time/checkpoint_s"] >= 0
    timing = result["timing"]
    phases = ("step", "data", "checkpoint", "compile", "setup")
    assert sum(timing[p] for p in phases) == pytest.approx(timing["wall"], rel=1e-6)
    assert timing["badput"] == pytest.approx(1 - timing["step"] / timing["wall"])
    # toy_run.gin saves every 3 steps: 2 saves plus the final wait were timed.
    assert timing["checkpoint"] > 0 and timing["compile"] > 0
    # The per-window step times add up to the run's step time.
    assert sum(r["time/step_s"] for r in rows) == pytest.approx(timing["step"], rel=1e-6)


def test_badput_line_is_logged(toy_gin, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="codet5p_jax.train.trainer"):
        _train(toy_gin, tmp_path, "--gin.TRAIN_STEPS=2", "--gin.train.plot=False")
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("badput ")]
    assert "train steps" in line and "compile" in line and "data" in line


def test_bad_profile_window_is_refused(toy_gin, tmp_path):
    with pytest.raises(ValueError, match="profile_steps must be"):
        _train(toy_gin, tmp_path, "--gin.train.profile_steps=(5, 5)")
