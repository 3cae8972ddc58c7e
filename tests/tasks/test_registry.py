"""Every registered task and mixture yields batches at its default lengths; converters; corpora."""

import json

import numpy as np
import pytest
import seqio

import gin
import tasks
from tasks import registry
from tasks.stage1 import Stage1FeatureConverter
from tasks.vocabularies import CDEC_ID, CLM_ID, EOS_ID, TDEC_ID

STDLIB = tasks.corpus_names("stdlib")


def _batch(name, key, lengths=None, batch_size=2, split="train", **kw):
    ds = seqio.get_dataset(
        name,
        lengths or tasks.DEFAULT_LENGTHS[key],
        feature_converter=tasks.feature_converter_for(key)(pack=False),
        dataset_split=split,
        batch_size=batch_size,
        **kw,
    )
    return next(ds.as_numpy_iterator())


def _expected_shapes(key, lengths, batch_size=2):
    if key.startswith("stage2"):
        lt, lc = lengths["text_tokens"], lengths["code_tokens"]
        out = {"text_tokens": lt, "code_tokens": lc}
        for prefix, n in (("text_to_code", lc), ("code_to_text", lt)):
            for k in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"):
                out[f"{prefix}_{k}"] = n
        shapes = {k: (batch_size, v) for k, v in out.items()}
        shapes["pair_ids"] = (batch_size,)
        return shapes
    s, t = lengths["inputs"], lengths["targets"]
    shapes = {
        "encoder_input_tokens": (batch_size, s),
        "decoder_input_tokens": (batch_size, t),
        "decoder_target_tokens": (batch_size, t),
        "decoder_loss_weights": (batch_size, t),
    }
    if key in ("span_denoise", "seq2seq_clm", "decoder_clm", "stage1_denoise", "stage1"):
        shapes["objective_ids"] = (batch_size,)
    return shapes


def test_registered_names():
    names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
    assert set(STDLIB.values()) | {"codet5p_humaneval"} <= names
    for mixture in (
        "codet5p_stage1_stdlib",
        "codet5p_stage1_denoise_stdlib",
        "codet5p_stage2_stdlib",
    ):
        assert mixture in seqio.MixtureRegistry.names()
    joint = seqio.get_mixture_or_task("codet5p_stage1_stdlib")
    assert sorted(t.name for t in joint.tasks) == sorted(
        STDLIB[k] for k in ("span_denoise", "seq2seq_clm", "decoder_clm")
    )
    assert len({joint.get_rate(t) for t in joint.tasks}) == 1  # equal rates


@pytest.mark.parametrize("key", sorted(STDLIB))
def test_every_stdlib_task_and_mixture_yields_default_batches(key):
    lengths_key = "stage2" if key == "stage2_bimodal" else key
    lengths = tasks.DEFAULT_LENGTHS[lengths_key]
    batch = _batch(STDLIB[key], lengths_key)
    shapes = {k: v.shape for k, v in batch.items()}
    assert shapes == _expected_shapes(key, lengths)
    assert all(v.dtype == np.int32 for v in batch.values())
    if key in ("span_denoise", "stage1_denoise"):
        assert (batch["encoder_input_tokens"][:, -1] == EOS_ID).all()  # 512 exactly filled
        assert (batch["objective_ids"] == 0).all()
    if key == "decoder_clm":
        assert (batch["encoder_input_tokens"] == CLM_ID).all()
        assert (batch["decoder_target_tokens"][:, -1] == EOS_ID).all()  # 1024 filled
    if "decoder_target_tokens" in batch:
        tgt, inp = batch["decoder_target_tokens"], batch["decoder_input_tokens"]
        np.testing.assert_array_equal(batch["decoder_loss_weights"], (tgt != 0).astype(np.int32))
        np.testing.assert_array_equal(inp[:, 1:], tgt[:, :-1])
        assert (inp[:, 0] == 0).all()


def test_humaneval_batches_at_default_lengths():
    ds = seqio.get_dataset(
        "codet5p_humaneval",
        tasks.downstream.HUMANEVAL_LENGTHS,
        feature_converter=seqio.EncDecFeatureConverter(pack=False),
        dataset_split="test",
        batch_size=4,  # get_dataset drops a partial last batch; 164 = 41 * 4
    )
    batches = list(ds.as_numpy_iterator())
    assert sum(len(b["encoder_input_tokens"]) for b in batches) == 164
    assert batches[0]["encoder_input_tokens"].shape == (4, 600)
    assert batches[0]["decoder_target_tokens"].shape == (4, 512)


def test_stage1_mixture_mixes_all_objectives_with_equal_rates():
    ds = seqio.get_dataset(
        "codet5p_stage1_stdlib",
        tasks.DEFAULT_LENGTHS["stage1"],
        feature_converter=Stage1FeatureConverter(),
        shuffle=False,
        seed=0,
        num_epochs=None,
    )
    ids = np.array([ex["objective_ids"] for ex in ds.take(45).as_numpy_iterator()])
    counts = np.bincount(ids, minlength=3)
    assert counts.sum() == 45 and (counts >= 7).all(), counts
    enc = next(ds.filter(lambda ex: ex["objective_ids"] == 1).as_numpy_iterator())
    assert enc["encoder_input_tokens"][0] == CLM_ID


def test_bimodal_batch_contents():
    b = _batch(STDLIB["stage2"], "stage2", batch_size=4)
    text, code = b["text_tokens"], b["code_tokens"]
    assert (text[:, 0] == 1).all() and (code[:, 0] == 1).all()
    for side in (text, code):
        for row in side:
            n = int((row != 0).sum())
            assert row[n - 1] == EOS_ID and (row[:n] != 0).all()
    for prefix, src, start in (("text_to_code", code, CDEC_ID), ("code_to_text", text, TDEC_ID)):
        tgt = b[f"{prefix}_decoder_target_tokens"]
        inp = b[f"{prefix}_decoder_input_tokens"]
        np.testing.assert_array_equal(tgt[:, :-1], src[:, 1:])  # no [CLS]/<s> in the target
        assert (inp[:, 0] == start).all()
        np.testing.assert_array_equal(inp[:, 1:], tgt[:, :-1])
        np.testing.assert_array_equal(b[f"{prefix}_decoder_loss_weights"], (tgt != 0) * 1)
    assert (b["pair_ids"] >= 0).all()


def test_smaller_requested_lengths_still_give_complete_examples():
    lengths = {"inputs": 64, "targets": 64}
    for key in ("span_denoise", "seq2seq_clm", "decoder_clm"):
        b = _batch(STDLIB[key], key, lengths)
        assert b["encoder_input_tokens"].shape == (2, 64)
        tgt = b["decoder_target_tokens"]
        last = (tgt != 0).sum(axis=1) - 1
        assert (tgt[np.arange(2), last] == EOS_ID).all()
    b = _batch(STDLIB["stage2"], "stage2", {"text_tokens": 16, "code_tokens": 32})
    assert b["code_tokens"].shape == (2, 32) and (b["code_tokens"] == EOS_ID).any(axis=1).all()


def test_determinism_and_host_sharding():
    task = seqio.get_mixture_or_task(STDLIB["seq2seq_clm"])

    def first(seed, shard=None):
        ds = task.get_dataset(
            tasks.DEFAULT_LENGTHS["seq2seq_clm"],
            shuffle=True,
            seed=seed,
            shard_info=shard,
            shuffle_buffer_size=8,  # small buffer: the test reads a handful of examples
        )
        return [(ex["pivot"], ex["targets"].tolist()) for ex in ds.take(3).as_numpy_iterator()]

    a = first(11)
    assert a == first(11)
    assert a != first(12)
    s0, s1 = first(11, seqio.ShardInfo(0, 2)), first(11, seqio.ShardInfo(1, 2))
    # Hosts read disjoint files, so their chunks differ.
    assert [t for _, t in s0] != [t for _, t in s1]


def test_tasks_support_offline_caching():
    task = seqio.get_mixture_or_task(STDLIB["span_denoise"])
    assert task.supports_caching
    # The pre-cache part (tokenize + size filter) is deterministic: a cache can store it.
    ds = task.source.get_dataset("train", shuffle=False)
    a = [x["tokens"].numpy().tolist() for x in task.preprocess_precache(ds, seed=1).take(3)]
    ds = task.source.get_dataset("train", shuffle=False)
    b = [x["tokens"].numpy().tolist() for x in task.preprocess_precache(ds, seed=2).take(3)]
    assert a == b and all(50 <= len(x) <= 2000 for x in a)


def test_user_corpora(source_tree, shared_dir, tmp_path):
    names = tasks.register_corpus(
        "usertree", source_tree, kind="directory", min_file_tokens=1, validation_fraction=0.0
    )
    assert names["stage1"] == "codet5p_stage1_usertree"
    b = _batch(names["decoder_clm"], "decoder_clm", {"inputs": 1, "targets": 32})
    assert b["decoder_target_tokens"].shape == (2, 32)
    b = _batch(names["stage2"], "stage2", {"text_tokens": 32, "code_tokens": 64})
    assert b["text_tokens"].shape == (2, 32)
    # Registering the same spec again is a no-op; a different one needs overwrite=True.
    assert (
        tasks.register_corpus(
            "usertree", source_tree, kind="directory", min_file_tokens=1, validation_fraction=0.0
        )
        == names
    )
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_corpus("usertree", source_tree, kind="directory")
    csn = tasks.register_corpus(
        "csn_py", shared_dir / "reference/datasets/codesearchnet/python", kind="pairs"
    )
    b = _batch(csn["summarize"], "summarize")
    assert b["encoder_input_tokens"].shape == (2, 320)
    b = _batch(csn["stage2"], "stage2")
    assert b["code_tokens"].shape == (2, 420)


def test_bad_corpora_fail_before_tf_data(tmp_path, source_tree):
    (tmp_path / "empty").mkdir()
    names = tasks.register_corpus("emptycorpus", tmp_path / "empty", kind="directory")
    with pytest.raises(ValueError, match="nothing usable"):
        _batch(names["stage1"], "stage1")
    jl = tmp_path / "go.jsonl"
    jl.write_text(json.dumps({"code": "package main\nfunc main() {}\n", "language": "go"}) + "\n")
    names = tasks.register_corpus("gojsonl", jl, kind="jsonl", validation_fraction=0.0)
    with pytest.raises(ValueError, match="no pairs records"):
        _batch(names["stage2"], "stage2")
    # Real files, but none within the paper's 50-2,000-token filter.
    names = tasks.register_corpus("tinyfiles", source_tree, kind="directory")
    with pytest.raises(ValueError, match="no file passed the size filter"):
        _batch(names["stage1"], "stage1")
    with pytest.raises(ValueError, match="needs a path"):
        tasks.register_corpus("nopath", kind="directory")
    with pytest.raises(ValueError, match="objective_id"):
        _batch(STDLIB["summarize"], "stage1")
    with pytest.raises(ValueError, match="does not pack"):
        Stage1FeatureConverter(pack=True)


def test_gin_registers_a_corpus(source_tree):
    with gin.unlock_config():
        gin.parse_config(
            [
                "corpus_mixture.name = 'gintree'",
                f"corpus_mixture.path = '{source_tree}'",
                "corpus_mixture.stage = 'stage2'",
            ]
        )
    try:
        assert registry.corpus_mixture() == "codet5p_stage2_gintree"
        assert "codet5p_stage2_gintree" in seqio.MixtureRegistry.names()
    finally:
        gin.clear_config()
