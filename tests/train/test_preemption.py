"""Killed runs: SIGKILL at a (seeded) random step resumes from the last checkpoint; SIGTERM saves
the current step and exits cleanly. Real `python -m codet5p_jax.cli train`
subprocesses."""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
STEPS = 40
SAVE_EVERY = 4


def _command(model_dir, *extra):
    return [
        sys.executable,
        "-m",
        "codet5p_jax.cli",
        "train",
        f"--gin_file={HERE / 'toy_run.gin'}",
        f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.TRAIN_STEPS={STEPS}",
        f"--gin.train.save_every={SAVE_EVERY}",
        *extra,
    ]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")])
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    return env


def _rows(model_dir) -> list[dict]:
    path = pathlib.Path(model_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _finished_checkpoints(model_dir) -> list[int]:
    ckpt_dir = pathlib.Path(model_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())


def _start_and_wait(model_dir, min_step: int, timeout: float = 300, need_checkpoint=False):
    """Starts a run and returns (process, last logged step) once it logged `min_step` (and, if
    asked, once an async checkpoint has been committed)."""
    proc = subprocess.Popen(
        _command(model_dir),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = _rows(model_dir)
        ready = not need_checkpoint or _finished_checkpoints(model_dir)
        if rows and rows[-1]["step"] >= min_step and ready:
            return proc, rows[-1]["step"]
        if proc.poll() is not None:
            pytest.fail(f"run ended early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("run did not reach the kill step in time")


# The kill step: drawn from a fixed seed (the same step in every run, so a failure reproduces),
# among the steps between checkpoints, so that the steps after the last checkpoint are run again
# after the resume and their losses compared. Change the seed to move it.
KILL_SEED = 0
KILL_AT = random.Random(KILL_SEED).choice([s for s in range(5, 26) if s % SAVE_EVERY])


def test_sigkill_at_random_step_resumes(tmp_path):
    model_dir = tmp_path / "killed"
    # A kill during the first async save legitimately leaves no checkpoint; wait for one.
    proc, seen = _start_and_wait(model_dir, KILL_AT, need_checkpoint=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    before = {r["step"]: r["loss"] for r in _rows(model_dir)}
    last = _finished_checkpoints(model_dir)[-1]
    resumed = subprocess.run(
        _command(model_dir), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"done at step {STEPS}" in resumed.stdout
    assert f"resuming from step {last} of {model_dir} (checkpoints/{last})" in resumed.stderr
    # Rows logged after the last checkpoint were dropped and recomputed: each step once.
    rows = _rows(model_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    # Steps run both before the kill and after the resume saw the same batches and dropout.
    redone = [r for r in rows if last < r["step"] <= max(before)]
    assert redone, f"killed at step {seen} right after its checkpoint {last}: nothing redone"
    assert [(r["step"], r["loss"]) for r in redone] == [
        (r["step"], before[r["step"]]) for r in redone
    ]


def test_sigterm_saves_the_current_step(tmp_path):
    model_dir = tmp_path / "terminated"
    proc, _ = _start_and_wait(model_dir, 6)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped (checkpoint saved) at step" in out
    stopped = int(out.split("stopped (checkpoint saved) at step ")[1].split(":")[0])
    assert stopped < STEPS
    assert (model_dir / "checkpoints" / str(stopped) / "params").is_dir()
    meta = json.loads((model_dir / "checkpoints" / str(stopped) / "meta" / "metadata").read_text())
    assert meta["step"] == stopped and meta["data"]["batches_consumed"] == stopped
