"""Stage-1 input pipeline: tokenize whole files, filter by size, concatenate and chunk.

CodeT5+ §3.1 / §4.1: files of 50-2,000 tokens are kept; "we concatenate different code files
into sequences and truncate them into chunks of fixed length". Files are joined with `</s>` so
a chunk that spans two files shows the boundary. Tokenization and filtering are deterministic, so
they sit before seqio's `CacheDatasetPlaceholder` and can be cached offline; chunking depends on
the requested lengths and runs after it. The registered tasks read the corpus tokenized once
(`tasks.token_cache`, `select_tokenized`); `tokenize_and_filter` does the same inside tf.data on
every epoch (`register_corpus(..., pretokenize=False)`) and is the reference the cache is tested
against.
"""

import numpy as np
import seqio
import tensorflow as tf

# Paper §4.1 file-size filter, in tokens of the CodeT5 tokenizer.
MIN_FILE_TOKENS = 50
MAX_FILE_TOKENS = 2000


def tokenize_code(
    ds: tf.data.Dataset, vocabulary: seqio.Vocabulary, key: str = "code"
) -> tf.data.Dataset:
    """Maps `{key: string}` examples to `{"tokens": int32 [n]}` (no EOS)."""

    def fn(ex):
        return {"tokens": tf.cast(vocabulary.encode_tf(ex[key]), tf.int32)}

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def filter_by_length(
    ds: tf.data.Dataset, min_tokens: int = MIN_FILE_TOKENS, max_tokens: int = MAX_FILE_TOKENS
) -> tf.data.Dataset:
    """Keeps files whose token count is within `[min_tokens, max_tokens]` (None = no bound)."""

    def keep(ex):
        n = tf.size(ex["tokens"])
        ok = tf.constant(True)
        if min_tokens is not None:
            ok = tf.logical_and(ok, n >= min_tokens)
        if max_tokens is not None:
            ok = tf.logical_and(ok, n <= max_tokens)
        return ok

    return ds.filter(keep)


def concat_and_chunk(
    ds: tf.data.Dataset, chunk_length: int, separator_id: int | None
) -> tf.data.Dataset:
    """Concatenates token streams (joined by `separator_id`) into `{"tokens": [chunk_length]}`.

    The final partial chunk is dropped, so every chunk has exactly `chunk_length` tokens. A
    `scan` carries the tokens not yet in a chunk from file to file and cuts whole chunks per
    file: the same chunks as unbatching to single tokens and re-batching, at a fraction of the
    cost (one tf.data element per file and per chunk instead of per token).
    """
    if chunk_length < 1:
        raise ValueError(f"chunk_length must be >= 1, got {chunk_length}")

    def with_separator(ex):
        tokens = ex["tokens"]
        if separator_id is not None:
            tokens = tf.concat([tokens, [separator_id]], axis=0)
        return tokens

    def cut(carry, tokens):
        stream = tf.concat([carry, tokens], axis=0)
        n = tf.size(stream) // chunk_length * chunk_length
        return stream[n:], tf.reshape(stream[:n], [-1, chunk_length])

    flat = ds.map(with_separator, num_parallel_calls=tf.data.AUTOTUNE)
    dtype = ds.element_spec["tokens"].dtype
    chunks = flat.scan(tf.zeros([0], dtype), cut).unbatch()
    return chunks.map(lambda t: {"tokens": t}, num_parallel_calls=tf.data.AUTOTUNE)


def select_tokenized(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`TokenizedCorpusSource` records -> `{"tokens": int32 [n]}` of the files the filter kept."""
    kept = ds.filter(lambda ex: tf.equal(ex["kept"], 1))
    return kept.map(
        lambda ex: {"tokens": tf.io.decode_raw(ex["tokens"], tf.int32, little_endian=True)},
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def tokenize_and_filter(
    ds: tf.data.Dataset,
    vocabulary: seqio.Vocabulary,
    min_tokens: int | None = MIN_FILE_TOKENS,
    max_tokens: int | None = MAX_FILE_TOKENS,
) -> tf.data.Dataset:
    """tokenize -> size filter (the deterministic, cacheable part of stage 1).

    Long files are mostly over the limit, and tokenizing them only to drop them dominates the
    cost on real corpora, so a file longer than `8 * max_tokens` characters is first tokenized
    on that prefix: byte-level BPE can only change the last pre-token at the cut, so more than
    `max_tokens + 1` prefix tokens proves the file too long. Results equal plain tokenization.
    """
    if max_tokens is None:
        return filter_by_length(tokenize_code(ds, vocabulary), min_tokens, max_tokens)
    limit_chars = 8 * max_tokens

    def encode(raw: bytes) -> np.ndarray:
        text = raw.decode("utf-8", errors="replace")
        if len(text) > limit_chars and len(vocabulary.encode(text[:limit_chars])) > max_tokens + 1:
            return np.full([max_tokens + 1], -1, np.int32)  # marker: too long, dropped below
        return np.asarray(vocabulary.encode(text), np.int32)

    def fn(ex):
        tokens = tf.numpy_function(encode, [ex["code"]], tf.int32, stateful=False)
        tokens.set_shape([None])
        return {"tokens": tokens}

    return filter_by_length(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE), min_tokens, max_tokens)
