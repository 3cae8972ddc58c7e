"""Seq2seq and decoder-only causal LM on real stdlib chunks: pivots, [CLM], lengths, EOS."""

import numpy as np
import pytest
import scipy.stats
import seqio
import tensorflow as tf

from tasks import causal_lm, chunking
from tasks.vocabularies import CLM_ID, EOS_ID

SOURCE, TARGET = 768, 600
CHUNK = causal_lm.seq2seq_chunk_length(SOURCE, TARGET)


@pytest.fixture(scope="module")
def chunks(stdlib_file_tokens):
    ds = tf.data.Dataset.from_generator(
        lambda: ({"tokens": t} for t in stdlib_file_tokens),
        output_signature={"tokens": tf.TensorSpec([None], tf.int32)},
    )
    out = [c["tokens"] for c in chunking.concat_and_chunk(ds, CHUNK, EOS_ID).as_numpy_iterator()]
    assert len(out) >= 20
    return out


def _split(chunks, repeats=1, seed=99):
    ds = tf.data.Dataset.from_tensor_slices({"tokens": np.stack(chunks)}).repeat(repeats)
    with seqio.utils.map_seed_manager(seed):
        out = causal_lm.seq2seq_causal_lm(ds, CLM_ID, EOS_ID, SOURCE, TARGET)
    return list(out.as_numpy_iterator())


def test_pivots_uniform_in_10_to_90_percent(chunks):
    examples = _split(chunks, repeats=max(1, 600 // len(chunks)))
    lo, hi = causal_lm.pivot_bounds(CHUNK)
    assert (lo, hi) == (round(0.1 * CHUNK), round(0.9 * CHUNK))
    pivots = np.array([ex["pivot"] for ex in examples])
    assert pivots.min() >= lo and pivots.max() <= hi
    # Kolmogorov-Smirnov against the continuous uniform on [lo, hi + 1) after jittering the
    # integer pivots uniformly inside their unit cell (exact for a discrete uniform).
    jitter = np.random.default_rng(0).uniform(size=len(pivots))
    stat = scipy.stats.kstest(pivots + jitter, scipy.stats.uniform(lo, hi + 1 - lo).cdf)
    assert stat.pvalue > 1e-3, stat
    # and it is not degenerate: both ends of the range are visited.
    span = hi - lo
    assert pivots.min() < lo + 0.1 * span and pivots.max() > hi - 0.1 * span


def test_clm_placement_lengths_and_eos(chunks):
    for chunk, ex in zip(chunks, _split(chunks), strict=True):
        inputs, targets, p = ex["inputs"], ex["targets"], int(ex["pivot"])
        assert ex["objective_id"] == 1
        assert inputs[0] == CLM_ID and inputs[-1] == EOS_ID and targets[-1] == EOS_ID
        assert len(inputs) <= SOURCE and len(targets) <= TARGET
        # Source = the context right before the pivot; target = the code right after it.
        source = inputs[1:-1]
        assert source.tolist() == chunk[max(0, p - (SOURCE - 2)) : p].tolist()
        assert targets[:-1].tolist() == chunk[p : p + TARGET - 1].tolist()
        assert len(source) == min(p, SOURCE - 2)
        assert len(targets) - 1 == min(CHUNK - p, TARGET - 1)


def test_same_seed_same_pivots(chunks):
    a = [int(ex["pivot"]) for ex in _split(chunks[:10], seed=5)]
    assert a == [int(ex["pivot"]) for ex in _split(chunks[:10], seed=5)]
    assert a != [int(ex["pivot"]) for ex in _split(chunks[:10], seed=6)]


def test_decoder_only(stdlib_file_tokens):
    ds = tf.data.Dataset.from_generator(
        lambda: ({"tokens": t} for t in stdlib_file_tokens[:40]),
        output_signature={"tokens": tf.TensorSpec([None], tf.int32)},
    )
    chunks = chunking.concat_and_chunk(ds, 1023, EOS_ID)
    out = causal_lm.decoder_only_causal_lm(chunks, CLM_ID, EOS_ID)
    n = 0
    for chunk, ex in zip(chunks.as_numpy_iterator(), out.as_numpy_iterator(), strict=True):
        assert ex["inputs"].tolist() == [CLM_ID]
        assert len(ex["targets"]) == 1024 and ex["targets"][-1] == EOS_ID
        assert ex["targets"][:-1].tolist() == chunk["tokens"].tolist()
        assert ex["objective_id"] == 2
        n += 1
    assert n > 0
