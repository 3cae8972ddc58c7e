"""The two causal-LM variants of CodeT5+ stage 1 (paper §3.1).

* **Seq2seq causal LM**: a pivot is drawn uniformly in 10-90 % of the chunk; the part before it
  (with `[CLM]` prepended) is the source, the part after it the target. The chunk holds
  `source_length - 2 + target_length - 1` tokens (room for `[CLM]` and two EOS), so both sides
  can fill their lengths; the source keeps the tokens just before the pivot (left-truncated)
  and the target the tokens just after it (right-truncated). The pivot index is kept in the
  example as `pivot` (tasks only; mixtures drop it).
* **Decoder-only causal LM**: the encoder input is just `[CLM]`; the decoder generates the whole
  chunk of `target_length - 1` tokens plus EOS.

Both emit `objective_id` (1 and 2) for per-objective metrics (docs/DESIGN.md, Batches).
"""

import seqio
import tensorflow as tf

PIVOT_RANGE = (0.1, 0.9)


def seq2seq_chunk_length(source_length: int, target_length: int) -> int:
    """Raw tokens per seq2seq-CLM chunk: source minus `[CLM]` and EOS, plus target minus EOS."""
    return source_length - 2 + target_length - 1


def pivot_bounds(chunk_length: int, pivot_range=PIVOT_RANGE) -> tuple[int, int]:
    """Inclusive integer range of pivot positions: `round(0.1 L)` .. `round(0.9 L)`."""
    lo, hi = (int(round(f * chunk_length)) for f in pivot_range)
    return max(lo, 1), min(hi, chunk_length - 1)


def seq2seq_causal_lm(
    ds: tf.data.Dataset,
    clm_id: int,
    eos_id: int,
    source_length: int,
    target_length: int,
    pivot_range=PIVOT_RANGE,
) -> tf.data.Dataset:
    """`{"tokens": [L]}` -> `{"inputs": [CLM] prefix EOS, "targets": suffix EOS, "pivot"}`."""
    length = ds.element_spec["tokens"].shape[0]
    if length is None:
        raise ValueError("seq2seq_causal_lm needs fixed-length chunks")
    lo, hi = pivot_bounds(length, pivot_range)

    @seqio.map_over_dataset(num_seeds=1)
    def split(ex, seed):
        tokens = ex["tokens"]
        pivot = tf.random.stateless_uniform([], seed, minval=lo, maxval=hi + 1, dtype=tf.int32)
        start = tf.maximum(pivot - (source_length - 2), 0)
        source = tokens[start:pivot]
        target = tokens[pivot : pivot + target_length - 1]
        return {
            "inputs": tf.concat([[clm_id], source, [eos_id]], 0),
            "targets": tf.concat([target, [eos_id]], 0),
            "objective_id": tf.constant(1, tf.int32),
            "pivot": pivot,
        }

    return split(ds)


def decoder_only_causal_lm(ds: tf.data.Dataset, clm_id: int, eos_id: int) -> tf.data.Dataset:
    """`{"tokens": [L]}` -> `{"inputs": [CLM], "targets": tokens + EOS}`."""

    def fn(ex):
        return {
            "inputs": tf.constant([clm_id], tf.int32),
            "targets": tf.concat([ex["tokens"], [eos_id]], 0),
            "objective_id": tf.constant(2, tf.int32),
        }

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
