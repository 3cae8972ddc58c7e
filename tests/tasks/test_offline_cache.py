"""seqio's offline cache: `seqio_cache_tasks` (apache-beam) over the registered stdlib tasks.

The cache is written once per module by the real console script, in a subprocess, over the
small test corpus (`STDLIB_FILES` files). Then the tests read it back through seqio, the trainer's
data path and the `codet5p train` command line.
"""

import collections
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import seqio
import tensorflow as tf

import tasks  # noqa: F401  (registers the tasks)
from tasks import stage1, stage2

STAGE1 = [f"codet5p_stage1_stdlib_{o}" for o in ("span_denoise", "seq2seq_clm", "decoder_clm")]
STAGE2 = "codet5p_stage2_stdlib_bimodal"
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache_dir(_small_stdlib, tmp_path_factory) -> pathlib.Path:
    """Runs `seqio_cache_tasks` for the stage-1 and stage-2 stdlib tasks; yields its output dir.

    The subprocess inherits the test corpus settings (`CODET5P_*` variables), so it caches the
    same corpus the tests read. seqio's global cache dirs are restored afterwards.
    """
    out = tmp_path_factory.mktemp("seqio_cache")
    script = pathlib.Path(sys.executable).with_name("seqio_cache_tasks")
    cmd = [
        str(script),
        "--tasks=codet5p_stage1_stdlib_.*,codet5p_stage2_stdlib_bimodal",
        "--module_import=tasks",
        f"--output_cache_dir={out}",
        "--min_shards=2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = list(seqio.utils.get_global_cache_dirs())
    seqio.add_global_cache_dirs([str(out)])
    yield out
    seqio.utils.set_global_cache_dirs(before)


def _cached_records(task_dir: pathlib.Path, split: str) -> list[dict[str, np.ndarray]]:
    """The raw tf.Examples seqio wrote for `split`, parsed with the feature list of its info."""
    info = json.loads((task_dir / f"info.{split}.json").read_text())
    spec = {k: tf.io.RaggedFeature(tf.int64) for k in info["features"]}
    files = sorted(str(p) for p in task_dir.glob(f"{split}.tfrecord-*"))
    ds = tf.data.TFRecordDataset(files).map(lambda x: tf.io.parse_single_example(x, spec))
    return list(ds.as_numpy_iterator())


def _multiset(rows, keys) -> collections.Counter:
    return collections.Counter(
        tuple(tuple(np.asarray(r[k]).ravel().tolist()) for k in keys) for r in rows
    )


def test_every_task_cached_completely(cache_dir):
    for name in [*STAGE1, STAGE2]:
        task_dir = cache_dir / name
        assert (task_dir / "COMPLETED").is_file(), name
        stats = json.loads((task_dir / "stats.train.json").read_text())
        assert stats["examples"] > 0, name
        task = seqio.get_mixture_or_task(name)
        assert task.supports_caching and task.cache_dir == str(task_dir)


def test_cache_holds_the_tokenized_filtered_files(cache_dir, stdlib_file_tokens):
    """Stage 1 caches the deterministic prefix (tokenize + 50-2,000 token filter), nothing else."""
    rows = _cached_records(cache_dir / STAGE1[0], "train")
    assert _multiset(rows, ["tokens"]) == _multiset(
        [{"tokens": t} for t in stdlib_file_tokens], ["tokens"]
    )
    for name in STAGE1[1:]:  # the three objectives share the prefix
        assert _multiset(_cached_records(cache_dir / name, "train"), ["tokens"]) == _multiset(
            rows, ["tokens"]
        )


def test_cached_stage2_equals_uncached(cache_dir):
    """Per-example preprocessing: the cached pipeline yields exactly the uncached examples."""
    task = seqio.get_mixture_or_task(STAGE2)
    keys = ["text_tokens", "code_tokens", "pair_ids"]
    lengths = dict(stage2.DEFAULT_LENGTHS)
    cached = list(task.get_dataset(lengths, use_cached=True, shuffle=False).as_numpy_iterator())
    fresh = list(task.get_dataset(lengths, use_cached=False, shuffle=False).as_numpy_iterator())
    assert len(cached) == len(fresh) > 100
    assert _multiset(cached, keys) == _multiset(fresh, keys)


def test_cached_stage1_chunks_at_default_lengths(cache_dir):
    """Chunking runs after the cache: the same number of full-length examples as uncached."""
    vocab = tasks.CodeT5Vocabulary()
    for name in STAGE1:
        task = seqio.get_mixture_or_task(name)
        objective = name.removeprefix("codet5p_stage1_stdlib_")
        lengths = dict(stage1.DEFAULT_LENGTHS[objective])
        cached = list(task.get_dataset(lengths, use_cached=True, shuffle=False).as_numpy_iterator())
        fresh = list(task.get_dataset(lengths, use_cached=False, shuffle=False).as_numpy_iterator())
        assert len(cached) == len(fresh) > 0, name
        for ex in cached:
            assert ex["targets"][-1] == vocab.eos_id and len(ex["targets"]) <= lengths["targets"]
            assert len(ex["inputs"]) <= lengths["inputs"]
        if objective == "decoder_clm":  # encoder input is [CLM] alone; decoder full length
            assert all(list(ex["inputs"]) == [vocab.clm_id] for ex in cached)
            assert {len(ex["targets"]) for ex in cached} == {lengths["targets"]}


def test_cached_reads_are_deterministic_and_host_sharded(cache_dir):
    task = seqio.get_mixture_or_task(STAGE2)
    keys = ["text_tokens", "code_tokens", "pair_ids"]
    lengths = dict(stage2.DEFAULT_LENGTHS)

    def read(**kw):
        return list(task.get_dataset(lengths, use_cached=True, **kw).as_numpy_iterator())

    a, b = read(shuffle=True, seed=7), read(shuffle=True, seed=7)
    assert [r["pair_ids"] for r in a] == [r["pair_ids"] for r in b]
    assert [r["pair_ids"] for r in a] != [r["pair_ids"] for r in read(shuffle=True, seed=8)]
    hosts = [read(shuffle=False, shard_info=seqio.ShardInfo(i, 2)) for i in range(2)]
    assert all(hosts)
    assert _multiset(hosts[0] + hosts[1], keys) == _multiset(read(shuffle=False), keys)


def test_mixtures_from_cache_at_default_lengths(cache_dir):
    s1 = seqio.get_dataset(
        "codet5p_stage1_stdlib",
        task_feature_lengths={"inputs": 512, "targets": 512},
        dataset_split="train",
        use_cached=True,
        shuffle=True,
        seed=0,
        feature_converter=tasks.Stage1FeatureConverter(pack=False),
    )
    batch = next(s1.batch(4).as_numpy_iterator())
    assert batch["encoder_input_tokens"].shape == (4, 512)
    assert batch["decoder_target_tokens"].shape == (4, 512)
    s2 = seqio.get_dataset(
        "codet5p_stage2_stdlib",
        task_feature_lengths=dict(stage2.DEFAULT_LENGTHS),
        dataset_split="train",
        use_cached=True,
        shuffle=True,
        seed=0,
        feature_converter=tasks.BimodalFeatureConverter(pack=False),
    )
    batch = next(s2.batch(4).as_numpy_iterator())
    assert batch["text_tokens"].shape == (4, 128) and batch["code_tokens"].shape == (4, 420)


def _train(model_dir, *extra) -> int:
    from codet5p_jax.cli.train import main

    return main(
        [
            f"--gin_file={REPO / 'gin/experiments/tiny_stage1.gin'}",
            f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.TRAIN_STEPS=2",
            "--gin.BATCH_SIZE=8",
            '--gin.TASK_FEATURE_LENGTHS={"inputs": 32, "targets": 16}',
            "--gin.train.log_every=1",
            "--gin.train.plot=False",
            *extra,
        ]
    )


def test_train_reads_only_the_cache(cache_dir, tmp_path, monkeypatch):
    """`codet5p train` with USE_CACHED_TASKS trains from the cache without touching the corpus."""
    empty_corpus_cache = tmp_path / "no_corpus"
    monkeypatch.setenv("CODET5P_CACHE_DIR", str(empty_corpus_cache))
    flags = [f"--seqio_additional_cache_dirs={cache_dir}", "--gin.USE_CACHED_TASKS=True"]
    assert _train(tmp_path / "run", *flags) == 0
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2]
    assert not (empty_corpus_cache / "corpora").exists()  # the source was never read


def test_missing_cache_is_named(cache_dir, tmp_path, capsys):
    """No cache for a task: exit 2 naming the task, before any model is built."""
    uncached = "codet5p_summarize_stdlib"  # not among the tasks the fixture cached
    flags = ["--gin.USE_CACHED_TASKS=True", f"--gin.MIXTURE_OR_TASK_NAME='{uncached}'"]
    assert _train(tmp_path / "run", *flags) == 2
    err = capsys.readouterr().err
    assert f"{uncached} has no complete seqio cache" in err and "seqio_cache_tasks" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert _train(tmp_path / "run2", "--seqio_additional_cache_dirs=/does/not/exist") == 2
    assert "/does/not/exist" in capsys.readouterr().err
