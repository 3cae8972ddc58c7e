"""The pretokenized stage-1 path (tasks/token_cache.py) against the tf.data tokenization path.

References: plain `tokenizers` encoding followed by the 50-2,000 token filter, and the stage-1
tasks registered with `pretokenize=False` (tokenize inside tf.data, the pipeline before the
cache) over the same 150 stdlib files; examples must be identical for the same seed.
"""

import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest
import seqio
from testlib import STDLIB_FILES

import tasks
from tasks import chunking, corpus_cache, token_cache
from tasks.corpus_cache import CorpusSpec
from tasks.data_sources import PreparedCorpusSource, TokenizedCorpusSource

REPO = pathlib.Path(__file__).resolve().parents[2]


def _tokenized_files(spec, vocab, lo=50, hi=2000):
    source = TokenizedCorpusSource(spec, vocab, lo, hi)
    ds = chunking.select_tokenized(source.get_dataset("train", shuffle=False))
    return [ex["tokens"].tolist() for ex in ds.as_numpy_iterator()]


def test_cache_equals_plain_tokenization_and_the_tf_data_path(
    stdlib_spec, codet5_vocab, stdlib_file_tokens
):
    texts = [
        x["code"].decode()
        for x in PreparedCorpusSource(stdlib_spec, "code")
        .get_dataset("train", shuffle=False)
        .as_numpy_iterator()
    ]
    plain = [ids for ids in codet5_vocab.encode_batch(texts) if 50 <= len(ids) <= 2000]
    cached = _tokenized_files(stdlib_spec, codet5_vocab)
    assert cached == plain
    assert cached == [t.tolist() for t in stdlib_file_tokens]  # chunking.tokenize_and_filter
    assert 0 < len(cached) < len(texts)


ADVERSARIAL = [
    "x = 1  \n\ny = 2\n" * 40,  # trailing spaces and blank lines before the cut
    "it's(that)'s it's\n" * 60,  # contractions next to brackets
    "caf\u00e9(x)\n\u00e9t\u00e9=1\n" * 60,  # non-ASCII letters next to operators
    "=" * 900 + "\n" + "a.b" * 300,  # one long punctuation run, then letter/dot pairs
    "\n".join(f"    return f{i}(x) + y{i}" for i in range(80)),  # indented lines only
    "def f():\n" + "    pass\n" * 200,
    "a" * 2000,  # no cut point at all
    "x = [ENC]\n" * 300,  # added tokens with cut points inside them (`C]`)
    "y<extra_id_0>(z)" * 150,
] + ["y = f(x)\n" * k for k in (1, 3, 9, 27, 81)]  # lengths around every threshold below


@pytest.mark.parametrize("max_tokens", [10, 37, 120, 400])
def test_prefix_cut_never_changes_the_result(codet5_vocab, stdlib_samples, max_tokens):
    texts = stdlib_samples + ADVERSARIAL
    got = token_cache.encode_files(codet5_vocab, texts, 3, max_tokens)
    for text, ids in zip(texts, got, strict=True):
        full = codet5_vocab.encode(text)
        expected = full if 3 <= len(full) <= max_tokens else None
        assert (None if ids is None else ids.tolist()) == expected, text[:40]
    # The shortcut is taken (long texts are settled on their prefix) and both outcomes occur.
    assert any(len(t) > 4 * max_tokens and token_cache._CUT.search(t) for t in texts)
    assert any(g is None for g in got) and any(g is not None for g in got)


def test_prefix_cuts_are_pre_token_boundaries(codet5_vocab, stdlib_samples):
    # Independent of BPE: the byte-level pre-tokenizer splits every prefix ending at a cut into
    # exactly the leading pieces of the whole text.
    pre = codet5_vocab.tokenizer.pre_tokenizer
    for text in stdlib_samples[:4] + ADVERSARIAL:
        whole = [p for p, _ in pre.pre_tokenize_str(text)]
        for m in list(token_cache._CUT.finditer(text))[:200]:
            head = [p for p, _ in pre.pre_tokenize_str(text[: m.end()])]
            assert whole[: len(head)] == head, repr(text[max(0, m.end() - 20) : m.end() + 5])


def test_chosen_prefix_ids_start_the_whole_texts_ids(codet5_vocab, stdlib_samples):
    added = tuple(t.content for t in codet5_vocab.tokenizer.get_added_tokens_decoder().values())
    checked = 0
    for text in stdlib_samples + ADVERSARIAL:
        whole = codet5_vocab.encode(text)
        for limit in (40, 148, 480, 1600, 8000):
            cut = token_cache.prefix_cut(text, limit, added)
            if cut:
                head = codet5_vocab.encode(text[:cut])
                assert head == whole[: len(head)], repr(text[max(0, cut - 20) : cut + 5])
                checked += 1
    assert checked > 50
    # Inside `[ENC]` is a `_CUT` (letter, bracket) but never a chosen cut.
    assert token_cache.prefix_cut("[ENC]" * 40, 100, added) == 0


def test_stage1_examples_equal_the_tf_data_path():
    slow = tasks.register_corpus(
        "stdlibtfdata", kind="stdlib", max_files=STDLIB_FILES, pretokenize=False
    )
    fast = tasks.corpus_names("stdlib")
    for key in ("span_denoise", "seq2seq_clm", "decoder_clm"):

        def take(name, key=key):
            ds = seqio.get_mixture_or_task(name).get_dataset(
                tasks.DEFAULT_LENGTHS[key], shuffle=True, seed=5, shuffle_buffer_size=8
            )
            return [
                {k: np.asarray(v).tolist() for k, v in ex.items()}
                for ex in ds.take(12).as_numpy_iterator()
            ]

        assert take(fast[key]) == take(slow[key]), key
    lengths = tasks.DEFAULT_LENGTHS["stage1"]
    converter = tasks.Stage1FeatureConverter()

    def batch(name):
        ds = seqio.get_dataset(
            name, lengths, feature_converter=converter, shuffle=False, seed=3, batch_size=12
        )
        return next(ds.as_numpy_iterator())

    a, b = batch(fast["stage1"]), batch(slow["stage1"])
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert set(a["objective_ids"].tolist()) == {0, 1, 2}


def _rewrite_without_last_record(shard: pathlib.Path) -> None:
    import tensorflow as tf

    records = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
    with tf.io.TFRecordWriter(str(shard)) as w:
        for r in records[:-1]:
            w.write(r)


def test_cache_is_reused_and_keyed_by_content_and_filter(source_tree, codet5_vocab):
    spec = CorpusSpec(name="tokreuse", kind="directory", path=str(source_tree))
    first = token_cache.prepare_tokenized(spec, codet5_vocab, 1, 2000)
    mtime = os.stat(first / "tokenized.json").st_mtime_ns  # epath stat: no st_mtime_ns
    assert token_cache.prepare_tokenized(spec, codet5_vocab, 1, 2000) == first
    assert os.stat(first / "tokenized.json").st_mtime_ns == mtime
    meta = json.loads((first / "tokenized.json").read_text())
    assert meta["counts"]["train"]["records"] + meta["counts"]["validation"]["records"] == 4
    assert token_cache.cache_directory(spec, codet5_vocab, 1, 100) != first
    # Other corpus bytes (one record fewer) give another key.
    shard = pathlib.Path(corpus_cache.corpus_files(spec, "code", "train")[0])
    original = shard.read_bytes()
    try:
        _rewrite_without_last_record(shard)
        assert token_cache.cache_directory(spec, codet5_vocab, 1, 2000) != first
    finally:
        shard.write_bytes(original)
    assert token_cache.cache_directory(spec, codet5_vocab, 1, 2000) == first


def test_unreadable_corpus_shard_is_one_line_and_leaves_nothing(source_tree, codet5_vocab):
    spec = CorpusSpec(name="tokbroken", kind="directory", path=str(source_tree))
    shard = pathlib.Path(corpus_cache.corpus_files(spec, "code", "train")[0])
    original = shard.read_bytes()
    root = corpus_cache.cache_root() / "tokenized"
    try:
        shard.write_bytes(original[:-7] + b"garbage")  # a corrupt last record
        with pytest.raises(ValueError) as err:
            token_cache.prepare_tokenized(spec, codet5_vocab, 1, 2000)
        msg = str(err.value)
        assert "\n" not in msg and "cannot read" in msg and shard.name in msg, msg
        assert not [p for p in root.iterdir() if spec.directory().name in p.name]
    finally:
        shard.write_bytes(original)
    assert token_cache.prepare_tokenized(spec, codet5_vocab, 1, 2000).is_dir()


def test_non_tokenizers_vocabulary_is_refused(stdlib_spec):
    with pytest.raises(ValueError, match="pretokenize=False"):
        token_cache.cache_directory(stdlib_spec, seqio.PassThroughVocabulary(10), 50, 2000)


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "data_throughput", REPO / "benchmarks" / "data_throughput.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_reports_ratio_to_the_tokenizer(tmp_path, capsys):
    bench = _benchmark()
    bench.CEILING_CHARS = 300_000  # a short ceiling measurement keeps the test fast
    out = tmp_path / "r.json"
    rc = bench.main(["--only", "stage1_denoise", "--batches", "2", "--warmup", "1",
                     "--batch-size", "4", "--json", str(out)])  # fmt: skip
    assert rc == 0
    (r,) = json.loads(out.read_text())["results"]
    # Both sides are rounded (ratio to 4 decimals, ceiling to whole tokens/s).
    assert r["ratio_to_tokenizer"] == pytest.approx(
        r["tokens_per_s"] / r["tokenizer_tokens_per_s"], rel=1e-4
    )
    assert r["tokens_per_s_per_core"] == round(r["tokens_per_s"] / r["cores"])
    assert r["first_batch_s"] > 0 and len(r["loadavg"]) == 2
    assert bench.main(["--only", "stage9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown stage key" in err
