"""Prefetching inside real toy runs (tests/train/toy_run.gin): it changes no result, a resumed
run trains on exactly the batches of an uninterrupted one although batches were read ahead,
and a data error still stops the run with one line at the step of the bad batch."""

import json
import pathlib

import numpy as np
import pytest

import gin
from codet5p_jax import checkpointing
from codet5p_jax.cli import gin_flags
from codet5p_jax.cli.train import main
from codet5p_jax.train import data, prefetch, trainer

DROPOUT = "--gin.get_preset.dropout_rate=0.1"  # the per-step PRNG matters too
# Keys of a metrics row that are wall-clock measurements, not results.
TIMING = ("time/", "_per_second", "mfu")


def _args(toy_gin, model_dir, buffer_size, *extra):
    return [
        f"--gin_file={toy_gin}",
        f"--gin.MODEL_DIR='{model_dir}'",
        DROPOUT,
        f"--gin.make_prefetcher.buffer_size={buffer_size}",
        # One checkpoint per run (at the end or the stop) and no plot: these runs are about data.
        "--gin.train.save_every=6",
        "--gin.train.plot=False",
        *extra,
    ]


def _train(toy_gin, model_dir, buffer_size, *extra, **kwargs):
    gin_flags.parse_gin(
        gin_flags.parse_args(_args(toy_gin, model_dir, buffer_size, *extra), "t", "")
    )
    try:
        return trainer.train(**kwargs)
    finally:
        gin.clear_config()


def _rows(model_dir) -> list[dict]:
    text = (pathlib.Path(model_dir) / "metrics.jsonl").read_text()
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def _results(row: dict) -> dict:
    return {k: v for k, v in row.items() if not any(t in k for t in TIMING)}


class Recorder:
    """Host copies of the batches the trainer takes from the prefetcher (= trained), and the
    number of host batches read from the data iterator (read ahead included)."""

    def __init__(self, monkeypatch):
        self.trained: list[dict] = []
        self.read = 0
        real_next, real_host_batches = prefetch.DevicePrefetcher.__next__, data.host_batches

        def recording_next(it):
            batch = real_next(it)
            self.trained.append({k: np.asarray(v) for k, v in batch.items()})
            return batch

        def counting_host_batches(*args, **kwargs):
            for batch in real_host_batches(*args, **kwargs):
                self.read += 1
                yield batch

        monkeypatch.setattr(prefetch.DevicePrefetcher, "__next__", recording_next)
        monkeypatch.setattr(data, "host_batches", counting_host_batches)


@pytest.fixture(scope="module")
def runs(toy_gin, tmp_path_factory):
    """The same 6 steps without prefetching and with 4 batches read ahead."""
    out = {}
    for buffer_size in (0, 4):
        model_dir = tmp_path_factory.mktemp(f"buffer{buffer_size}")
        with pytest.MonkeyPatch.context() as mp:
            rec = Recorder(mp)
            result = _train(toy_gin, model_dir, buffer_size)
        out[buffer_size] = (model_dir, result, rec)
    return out


def test_prefetch_changes_no_result(runs):
    """Bit-identical metrics (every non-timing key of every step) and final params."""
    (plain_dir, plain, plain_rec), (pre_dir, pre, pre_rec) = runs[0], runs[4]
    assert plain["step"] == pre["step"] == 6
    plain_rows, pre_rows = _rows(plain_dir), _rows(pre_dir)
    assert [r["step"] for r in pre_rows] == list(range(1, 7))
    assert "loss" in _results(pre_rows[0]) and "grad_norm" in _results(pre_rows[0])
    assert [_results(r) for r in pre_rows] == [_results(r) for r in plain_rows]
    assert pre["losses"] == plain["losses"]
    for a, b in zip(_leaves(plain["state"].params), _leaves(pre["state"].params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert plain_rows[-1]["loss"] < plain_rows[0]["loss"]  # it trained: not two inits compared
    # Both trained on the same 6 batches; the batches differ from step to step.
    _assert_same_batches(pre_rec.trained, plain_rec.trained)
    assert not np.array_equal(
        plain_rec.trained[0]["encoder_input_tokens"], plain_rec.trained[1]["encoder_input_tokens"]
    )
    assert plain_rec.read == 6 and pre_rec.read == 6  # `limit`: nothing read past the last step


def test_resume_after_a_stop_trains_on_the_uninterrupted_batches(runs, toy_gin, tmp_path):
    """Stop after 3 steps with batches already read ahead, resume: the 3 + 3 trained batches
    are the uninterrupted run's 6, the checkpoint counts 3 consumed, the losses are equal."""
    model_dir = tmp_path / "stopped"
    with pytest.MonkeyPatch.context() as mp:
        first = Recorder(mp)
        stopped = _train(toy_gin, model_dir, 4, stop_after=3)
    assert stopped["preempted"] and stopped["step"] == 3
    assert len(first.trained) == 3
    assert first.read > 3, "nothing was read ahead: the test would not test the data position"
    meta = json.loads((model_dir / "checkpoints" / "3" / "meta" / "metadata").read_text())
    assert meta["data"]["batches_consumed"] == 3
    with pytest.MonkeyPatch.context() as mp:
        second = Recorder(mp)
        resumed = _train(toy_gin, model_dir, 4)
    assert resumed["step"] == 6 and len(second.trained) == 3
    _, full, full_rec = runs[4]
    _assert_same_batches(first.trained + second.trained, full_rec.trained)
    assert stopped["losses"] + resumed["losses"] == full["losses"]


def test_data_error_stops_at_its_step_with_one_line(toy_gin, tmp_path, capsys, monkeypatch):
    """The data iterator fails on batch 5 (step 5) while the thread reads ahead: steps 1-4 are
    trained and logged, the checkpoint of step 3 stays, and the command prints one line naming
    the problem (exit 2), as without prefetching."""
    real = data.host_batches

    def malformed_fifth(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 4:
                raise ValueError("toy_reverse: malformed record in batch 5 (field 'inputs')")
            yield batch

    monkeypatch.setattr(data, "host_batches", malformed_fifth)
    model_dir = tmp_path / "bad_data"
    assert main(_args(toy_gin, model_dir, 4, "--gin.train.save_every=3")) == 2
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if x.startswith("codet5p train: error:")]
    assert errors == [
        "codet5p train: error: ValueError: toy_reverse: malformed record in batch 5 (field "
        "'inputs')"
    ]
    assert "Traceback" not in err
    assert [r["step"] for r in _rows(model_dir)] == [1, 2, 3, 4]
    assert checkpointing.Checkpointer(model_dir, save_every=3).latest_step() == 3


def test_bad_buffer_size_writes_nothing(toy_gin, tmp_path, capsys):
    model_dir = tmp_path / "run"
    assert main(_args(toy_gin, model_dir, -1)) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "codet5p train: error: ValueError: make_prefetcher.buffer_size must be a non-negative "
        "integer (0 = no prefetch), got -1"
    ]
    assert not model_dir.exists()


def _assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in w:
            np.testing.assert_array_equal(g[k], w[k], err_msg=k)


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]
