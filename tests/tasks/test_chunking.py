"""Stage-1 chunking: the prefix-checked size filter equals plain tokenization; exact chunks."""

import numpy as np
import tensorflow as tf

from tasks import chunking
from tasks.data_sources import PreparedCorpusSource
from tasks.vocabularies import EOS_ID


def test_fast_size_filter_equals_plain_tokenization(stdlib_spec, codet5_vocab, stdlib_file_tokens):
    ds = PreparedCorpusSource(stdlib_spec, "code").get_dataset("train", shuffle=False)
    texts = [x["code"].decode() for x in ds.as_numpy_iterator()]
    plain = [codet5_vocab.encode(t) for t in texts]
    kept = [p for p in plain if 50 <= len(p) <= 2000]
    assert [t.tolist() for t in stdlib_file_tokens] == kept
    assert 0 < len(kept) < len(plain)  # the filter really drops files on both sides


def test_concat_and_chunk_is_the_separated_stream(stdlib_file_tokens):
    files = stdlib_file_tokens[:10]
    ds = tf.data.Dataset.from_generator(
        lambda: ({"tokens": t} for t in files),
        output_signature={"tokens": tf.TensorSpec([None], tf.int32)},
    )
    chunks = [c["tokens"] for c in chunking.concat_and_chunk(ds, 100, EOS_ID).as_numpy_iterator()]
    stream = np.concatenate([np.append(f, EOS_ID) for f in files])
    assert len(chunks) == len(stream) // 100
    np.testing.assert_array_equal(np.concatenate(chunks), stream[: 100 * len(chunks)])
