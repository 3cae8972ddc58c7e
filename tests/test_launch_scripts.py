"""`--dry-run` of the pod launchers prints commands that, run, start the right processes.

The printed commands are executed with stand-ins for `codet5p` and `srun` (the TPU worker's
part runs in a temporary HOME), so the checks cover their quoting, not only their text.
"""

import os
import pathlib
import shlex
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU = REPO / "scripts/launch_tpu_pod.sh"
SLURM = REPO / "scripts/slurm_train.sbatch"
RECORDER = '#!/bin/bash\nprintf "%s\\n" "$@" > "$RECORD_DIR/args.${SLURM_PROCID:-0}"\n'


def _tpu_dry_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(TPU), "--dry-run", *args], capture_output=True, text=True)


def _commands(stdout: str) -> list[list[str]]:
    return [shlex.split(x[2:]) for x in stdout.splitlines() if x.startswith("+ ")]


def _remote(cmd: list[str]) -> str | None:
    """The --command= of a `gcloud ... ssh` (None for other commands)."""
    values = [a.removeprefix("--command=") for a in cmd if a.startswith("--command=")]
    return values[0] if values else None


V4_32 = [
    "--name=pod",
    "--zone=us-central2-b",
    "--accelerator=v4-32",
    "--gin_file=gin/experiments/stage1_770m.gin",
    "--model_dir=gs://bucket/run",
    "--gin.TRAIN_STEPS=1000",
]


def test_tpu_v4_32_dry_run_prints_every_step(tmp_path):
    done = _tpu_dry_run(*V4_32)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# v4-32: 4 worker(s); MODEL_DIR gs://bucket/run")
    cmds = _commands(done.stdout)
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    assert cmds[0] == [*tpu, "describe", "pod", "--zone=us-central2-b"]
    assert cmds[1] == [
        *tpu,
        "create",
        "pod",
        "--zone=us-central2-b",
        "--accelerator-type=v4-32",
        "--version=tpu-ubuntu2204-base",
    ]
    assert cmds[2][:2] == ["git", "-C"] and cmds[2][-1] == "HEAD"
    archive = cmds[2][cmds[2].index("-o") + 1]
    assert cmds[3] == [*tpu, "scp", archive, "pod:~/codet5p_jax.tar.gz", "--zone=us-central2-b",
                       "--worker=all"]  # fmt: skip
    install, start, stream = cmds[4], cmds[5], cmds[6]
    assert "--worker=all" in install and 'pip install -q -e "$HOME/codet5p_jax[tpu]"' in (
        _remote(install)
    )
    assert "--worker=all" in start and "--worker=0" in stream
    assert _remote(stream) == "tail -n +1 -F ~/train.log"
    watched = [c for c in cmds if _remote(c) == "cat ~/train.rc 2>/dev/null || echo running"]
    assert [c[-2] for c in watched] == [f"--worker={w}" for w in range(4)]
    assert "pkill -TERM -P" in _remote(cmds[-1]) and "--worker=all" in cmds[-1]

    # The worker's start command, run in a fake HOME: the same train command, backgrounded,
    # its exit status collected.
    home = tmp_path / "home"
    (home / "venv/bin").mkdir(parents=True)
    (home / "codet5p_jax").mkdir()
    fake = home / "venv/bin/codet5p"
    fake.write_text(RECORDER)
    fake.chmod(0o755)
    env = {**os.environ, "HOME": str(home), "RECORD_DIR": str(tmp_path)}
    subprocess.run(["bash", "-c", _remote(start)], env=env, check=True, timeout=30)
    deadline = time.time() + 30
    while not (home / "train.rc").is_file() and time.time() < deadline:
        time.sleep(0.05)
    assert (home / "train.rc").read_text().strip() == "0"
    assert (home / "train.pid").read_text().strip().isdigit()
    assert (tmp_path / "args.0").read_text().splitlines() == [
        "train",
        "--gin_file=gin/experiments/stage1_770m.gin",
        "--gin.MODEL_DIR='gs://bucket/run'",
        "--distributed",
        "--gin.TRAIN_STEPS=1000",
    ]


@pytest.mark.parametrize(
    "accelerator, workers",
    [("v4-8", 1), ("v4-32", 4), ("v5p-128", 16), ("v5litepod-8", 1), ("v5litepod-16", 4)],
)
def test_tpu_worker_count_follows_the_slice(accelerator, workers):
    args = [
        a if not a.startswith("--accelerator") else f"--accelerator={accelerator}" for a in V4_32
    ]
    done = _tpu_dry_run(*args)
    assert done.stdout.startswith(f"# {accelerator}: {workers} worker(s)")
    assert done.stdout.count("train.rc 2>/dev/null || echo running") == workers


def test_tpu_missing_option_is_one_line():
    done = _tpu_dry_run(*[a for a in V4_32 if not a.startswith("--model_dir")])
    assert done.returncode == 2
    assert done.stderr.strip() == "launch_tpu_pod.sh: error: --model_dir is required"


def test_slurm_two_nodes_dry_run_starts_one_process_per_node(tmp_path):
    env = {
        **os.environ,
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_NNODES": "2",
        "RECORD_DIR": str(tmp_path),
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", str(SLURM), "--dry-run", "gin/experiments/stage1_220m.gin", "gs://bucket/run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "# 2 node(s): gpu07 gpu08; coordinator gpu07:12345"
    (srun,) = _commands(done.stdout)
    assert srun[:6] == [
        "srun",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        "bash",
    ]
    # Run the printed srun line with an `srun` that starts one task per node, as SLURM does.
    fake_srun = tmp_path / "srun"
    fake_srun.write_text(
        '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
        'for rank in 0 1; do SLURM_PROCID=$rank "$@"; done\n'
    )
    (tmp_path / "codet5p").write_text(RECORDER)
    for f in (fake_srun, tmp_path / "codet5p"):
        f.chmod(0o755)
    subprocess.run(srun, env=env, check=True, timeout=30)
    for rank in (0, 1):
        assert (tmp_path / f"args.{rank}").read_text().splitlines() == [
            "train",
            "--gin_file=gin/experiments/stage1_220m.gin",
            "--gin.MODEL_DIR='gs://bucket/run'",
            "--coordinator_address=gpu07:12345",
            "--num_processes=2",
            f"--process_id={rank}",
        ]


def test_slurm_outside_an_allocation_is_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run(
        ["bash", str(SLURM), "--dry-run", "x.gin", "gs://bucket/run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "SLURM_JOB_NODELIST is not set" in done.stderr
