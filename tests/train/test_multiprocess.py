"""Two `jax.distributed` CPU processes (4 fake devices each, gloo collectives) train, save,
restore and match a single 8-device process with the same data sharding."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from codet5p_jax.cli.train import main

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
COMMON = ["--gin.train.num_data_shards=2", "--gin.train.save_every=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(model_dir, steps: int):
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")])
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        cmd = [
            sys.executable,
            "-m",
            "codet5p_jax.cli",
            "train",
            f"--gin_file={HERE / 'toy_run.gin'}",
            f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.TRAIN_STEPS={steps}",
            *COMMON,
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={pid}",
            "--cpu_collectives=gloo",
        ]
        procs.append(
            subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    return outs


def _losses(model_dir):
    rows = [
        json.loads(x) for x in (pathlib.Path(model_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    return {r["step"]: r["loss"] for r in rows}


# Four process launches (each imports TensorFlow/seqio/JAX: ~15 s of CPU apiece) cannot be made
# fast; the in-process equivalents (sharded step, exact resume) run in the default suite.
@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    multi = tmp_path / "multi"
    # 4 steps, then a second launch resumes from the collectively written step-4 checkpoint.
    outs = _two_processes(multi, 4)
    assert "done at step 4" in outs[0]
    assert (multi / "checkpoints" / "4" / "params").is_dir()
    outs = _two_processes(multi, 6)
    assert "done at step 6" in outs[0]

    single = tmp_path / "single"
    assert (
        main(["--gin_file=" + str(HERE / "toy_run.gin"), f"--gin.MODEL_DIR='{single}'", *COMMON])
        == 0
    )
    want, got = _losses(single), _losses(multi)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
    # Same global batches and dropout; only the all-reduce order differs (gloo vs in-process).
    np.testing.assert_allclose(
        [got[s] for s in range(1, 7)], [want[s] for s in range(1, 7)], rtol=1e-5
    )
