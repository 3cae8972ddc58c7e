"""Runs whose every path is `gs://`, against the local Cloud Storage of tests/gcs_testbed.py.

Commands run as subprocesses with the testbed's environment (TensorFlow and TensorStore read
their endpoints at start-up). What the commands wrote is checked through a client of our own
(plain HTTP on the emulator's JSON API), never through the project's filesystem layer.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import safetensors.numpy
from gcs_testbed import download, list_objects, upload_tree

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS, SAVE_EVERY = 6, 2
# The tiny stage-1 run at short lengths on a few stdlib files: the point is where it writes.
TRAIN_FLAGS = [
    "--gin_file=gin/experiments/tiny_stage1.gin",
    "--gin.tokenizer_path.path='gs://bucket/tokenizer'",
    f"--gin.TRAIN_STEPS={STEPS}",
    f"--gin.train.save_every={SAVE_EVERY}",
    "--gin.train.log_every=1",
    '--gin.TASK_FEATURE_LENGTHS={"inputs": 32, "targets": 16}',
]


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "codet5p_jax.cli", *args]


def _env(gcs, **extra) -> dict[str, str]:
    env = dict(gcs[1])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["CODET5P_CACHE_DIR"] = "gs://bucket/cache"  # the prepared corpus lives in the bucket
    env["CODET5P_STDLIB_MAX_FILES"] = "40"
    env.pop("CODET5P_TOKENIZER_DIR", None)
    env.update(extra)
    return env


def _run(gcs, *args, timeout=900, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cli(*args), cwd=REPO, env=_env(gcs, **env), capture_output=True, text=True, timeout=timeout
    )


def _finished_steps(info, prefix: str) -> list[int]:
    names = list_objects(info, "bucket", f"{prefix}/checkpoints/")
    return sorted(
        int(n.split("/")[-2])
        for n in names
        if n.endswith("/commit_success.txt") and n.count("/") == 3
    )


def _metric_rows(info, prefix: str) -> list[dict]:
    if f"{prefix}/metrics.jsonl" not in list_objects(info, "bucket", prefix):
        return []
    text = download(info, "bucket", f"{prefix}/metrics.jsonl").decode()
    return [json.loads(x) for x in text.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def trained_run(gcs, shared_dir):
    """`codet5p train` to gs://bucket/run, SIGKILLed after its first checkpoint, then resumed.

    Returns the resumed run's CompletedProcess and the rows logged before the kill.
    """
    info = gcs[0]
    upload_tree(info, shared_dir / "reference/tokenizers/codet5", "bucket", "tokenizer")
    proc = subprocess.Popen(
        _cli("train", *TRAIN_FLAGS, "--gin.MODEL_DIR='gs://bucket/run'"),
        cwd=REPO,
        env=_env(gcs),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 900
    while not _finished_steps(info, "run"):
        if proc.poll() is not None:
            pytest.fail(f"run ended before its first checkpoint:\n{proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("no checkpoint in the bucket in time")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert _finished_steps(info, "run")[-1] < STEPS, "killed too late: nothing left to resume"
    before = _metric_rows(info, "run")
    resumed = _run(gcs, "train", *TRAIN_FLAGS, "--gin.MODEL_DIR='gs://bucket/run'")
    return resumed, before


@pytest.mark.slow
def test_train_on_gcs_killed_and_resumed(gcs, trained_run):
    info = gcs[0]
    resumed, before = trained_run
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"done at step {STEPS}" in resumed.stdout
    assert "resuming from step" in resumed.stderr and "gs://bucket/run" in resumed.stderr
    # Everything of the run is in the bucket, nothing in a local "gs:" directory.
    names = set(list_objects(info, "bucket", "run/"))
    for name in ("config.gin", "operative_config.gin", "metrics.jsonl", "loss_curve.png"):
        assert f"run/{name}" in names, sorted(names)[:20]
    assert any(n.startswith("run/events.out.tfevents.") for n in names)  # TensorBoard
    assert _finished_steps(info, "run")[-1] == STEPS
    assert not (REPO / "gs:").exists()
    # metrics.jsonl matches the checkpoint it resumed from: every step exactly once, and the
    # steps run before the kill and again after it saw the same batches.
    rows = _metric_rows(info, "run")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    again = {r["step"]: r["loss"] for r in rows}
    assert [again[r["step"]] for r in before] == [r["loss"] for r in before]
    # The corpus was prepared into, and read from, the bucket; the tokenizer came from it too.
    assert any(n.endswith("stats.json") for n in list_objects(info, "bucket", "cache/corpora/"))


@pytest.mark.slow
def test_convert_run_to_hf_on_gcs(gcs, trained_run, tmp_path):
    info = gcs[0]
    done = _run(gcs, "convert", "gs://bucket/run", "gs://bucket/hf", "--to", "hf")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    names = set(list_objects(info, "bucket", "hf/"))
    assert {"hf/config.json", "hf/model.safetensors"} <= names, names
    config = json.loads(download(info, "bucket", "hf/config.json"))
    assert config["architectures"] == ["T5ForConditionalGeneration"]
    state = safetensors.numpy.load(download(info, "bucket", "hf/model.safetensors"))
    assert state["shared.weight"].shape == (config["vocab_size"], config["d_model"])
    # A second convert to the same destination is refused and leaves it as it was.
    again = _run(gcs, "convert", "gs://bucket/run", "gs://bucket/hf", "--to", "hf")
    assert again.returncode != 0 and "already exists" in again.stderr
    assert np.array_equal(
        safetensors.numpy.load(download(info, "bucket", "hf/model.safetensors"))["shared.weight"],
        state["shared.weight"],
    )


@pytest.mark.slow
def test_eval_writes_results_to_gcs(gcs, trained_run):
    info = gcs[0]
    done = _run(
        gcs,
        "eval",
        "--gin_file=gin/runs/eval.gin",
        "--gin.CHECKPOINT_PATH='gs://bucket/run'",
        "--gin.OUTPUT_DIR='gs://bucket/eval'",
        "--gin.MIXTURE_OR_TASK_NAME='codet5p_stage1_stdlib_span_denoise'",
        '--gin.TASK_FEATURE_LENGTHS={"inputs": 32, "targets": 16}',
        "--gin.evaluate.split='train'",
        "--gin.evaluate.num_examples=8",
        "--gin.evaluate.max_new_tokens=4",
        CODET5P_TOKENIZER_DIR="gs://bucket/tokenizer",  # eval.gin binds no tasks configurable
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.loads(download(info, "bucket", "eval/metrics.json"))
    assert "gs://bucket/run/checkpoints/6" in metrics["checkpoint"]


def _bad_input(gcs, model_dir, **env) -> subprocess.CompletedProcess:
    flags = [f for f in TRAIN_FLAGS if "tokenizer_path" not in f]
    return _run(gcs, "train", *flags, f"--gin.MODEL_DIR='{model_dir}'", timeout=300, **env)


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith("codet5p train: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "step 1:" not in proc.stdout + proc.stderr  # refused before training


@pytest.mark.slow
def test_bucket_typo_is_one_error_before_training(gcs):
    proc = _bad_input(gcs, "gs://bukcet/run")
    _one_line_error(proc, "MODEL_DIR gs://bukcet/run", "bucket gs://bukcet does not exist")
    assert "bukcet" not in " ".join(list_objects(gcs[0], "bucket"))


@pytest.mark.slow
def test_no_credentials_is_one_error_before_training(gcs, tmp_path):
    # No token, no key file, no gcloud login (empty HOME), no metadata server: TF sends
    # anonymous requests, which the testbed refuses with 401 as GCS does for a private bucket.
    proc = _bad_input(
        gcs,
        "gs://bucket/anonymous",
        GOOGLE_AUTH_TOKEN_FOR_TESTING="",
        HOME=str(tmp_path),
        GCS_RETRY_CONFIG_MAX_RETRIES="1",
    )
    _one_line_error(proc, "MODEL_DIR gs://bucket/anonymous", "cannot access bucket gs://bucket")


@pytest.mark.slow
def test_unreachable_endpoint_is_one_error_before_training(gcs):
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    proc = _bad_input(
        gcs,
        "gs://bucket/offline",
        HTTPS_PROXY=closed,
        https_proxy=closed,
        TENSORSTORE_GCS_HTTP_URL=closed,
        GCS_RETRY_CONFIG_MAX_RETRIES="1",
    )
    _one_line_error(proc, "MODEL_DIR gs://bucket/offline", "cannot access bucket gs://bucket")


@pytest.mark.slow
def test_training_reads_a_seqio_cache_on_gcs(gcs, tmp_path, shared_dir):
    """The seqio offline cache in a bucket (as a Dataflow `seqio_cache_tasks` job leaves it)
    feeds `codet5p train` through `--seqio_additional_cache_dirs=gs://...`; the corpus is never
    read. beam's own GCS writer needs `apache-beam[gcp]` (not a dependency), so the cache is
    written locally and uploaded with our independent client."""
    info = gcs[0]
    local = tmp_path / "seqio_cache"
    # 150 files: with fewer the 5 % validation split of the corpus is empty, which the cache
    # job (it caches every split) refuses.
    env = _env(gcs, CODET5P_CACHE_DIR=str(tmp_path / "corpus"), CODET5P_STDLIB_MAX_FILES="150")
    env["CODET5P_TOKENIZER_DIR"] = str(shared_dir / "reference/tokenizers/codet5")
    cache = subprocess.run(
        [
            str(pathlib.Path(sys.executable).with_name("seqio_cache_tasks")),
            "--tasks=codet5p_stage1_stdlib_.*",
            "--module_import=tasks",
            f"--output_cache_dir={local}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert cache.returncode == 0, cache.stderr[-3000:]
    upload_tree(info, local, "bucket", "seqio_cache")
    done = _run(
        gcs,
        "train",
        *TRAIN_FLAGS,
        "--gin.MODEL_DIR='gs://bucket/cached_run'",
        "--gin.TRAIN_STEPS=2",
        "--gin.USE_CACHED_TASKS=True",
        "--seqio_additional_cache_dirs=gs://bucket/seqio_cache",
        CODET5P_CACHE_DIR="gs://bucket/no_corpus",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert [r["step"] for r in _metric_rows(info, "cached_run")] == [1, 2]
    assert not list_objects(info, "bucket", "no_corpus/")  # the corpus was never prepared
