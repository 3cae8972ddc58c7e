"""T5-style span corruption for CodeT5+ stage-1 span denoising (paper §3.1).

"Randomly replace 15% of the tokens with indexed sentinel tokens ... span lengths ... with a mean
of 3". Implemented as in T5 (`random_spans_noise_mask`, one unique sentinel per span), on
subword tokens: every chunk gets exactly `round(L * 0.15)` noise tokens in
`round(noise / 3)` spans, alternating with non-noise spans and always starting with non-noise.
The paper's whole-word masking (spans sampled before subword tokenization) is not reproduced.

Sentinels follow the T5 convention: span k gets `<extra_id_k>` = 32099 - k.

Example (`[x]` = sentinel k):
  tokens  a b c d e f g h
  inputs  a [0] d e f [1] h </s>
  targets [0] b c [1] g </s>
"""

import numpy as np
import seqio
import tensorflow as tf

from tasks.vocabularies import NUM_SENTINELS, sentinel_id

NOISE_DENSITY = 0.15
MEAN_SPAN_LENGTH = 3.0


def noise_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """`(num_noise_tokens, num_noise_spans)` for a chunk of `length` tokens (as T5)."""
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span_length)), 1)
    return num_noise, num_spans


def chunk_and_target_lengths(
    inputs_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> tuple[int, int]:
    """Raw chunk length whose corrupted input (with EOS) fills `inputs_length`, and the targets
    length (with EOS) it produces. T5's `random_spans_helper`: 512 -> (568, 114)."""

    def lengths(tokens_length):
        num_noise, num_spans = noise_counts(tokens_length, noise_density, mean_span_length)
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    return tokens_length, targets_length


def _random_segmentation(num_items: int, num_segments: int, seed) -> tf.Tensor:
    """Random split of `num_items` into `num_segments` positive lengths (T5)."""
    first_in_segment = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
    first_in_segment = tf.pad(seqio.utils.stateless_shuffle(first_in_segment, seed), [[1, 0]])
    segment_id = tf.cumsum(first_in_segment)
    return tf.math.segment_sum(tf.ones_like(segment_id), segment_id)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_span_length: float, seeds
) -> tf.Tensor:
    """Boolean `[length]` mask, True on noise; starts with a non-noise span (T5).

    Args:
      length: Static chunk length.
      noise_density: Fraction of noise tokens.
      mean_span_length: Mean noise-span length.
      seeds: Two stateless seeds (`[2, 2]` int tensor).
    """
    num_noise, num_spans = noise_counts(length, noise_density, mean_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, seeds[0])
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, seeds[1])
    interleaved = tf.reshape(tf.stack([nonnoise_lengths, noise_lengths], axis=1), [-1])
    span_starts = tf.cumsum(interleaved)[:-1]
    start_indicator = tf.math.unsorted_segment_sum(tf.ones_like(span_starts), span_starts, length)
    return tf.equal(tf.math.floormod(tf.cumsum(start_indicator), 2), 1)


def replace_spans_with_sentinels(tokens: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Replaces each run of True in `mask` by one sentinel, numbered 0, 1, ... in order."""
    prev = tf.pad(mask[:-1], [[1, 0]])
    first = tf.logical_and(mask, tf.logical_not(prev))
    subsequent = tf.logical_and(mask, prev)
    sentinels = sentinel_id(0) + 1 - tf.cumsum(tf.cast(first, tokens.dtype))
    return tf.boolean_mask(tf.where(first, sentinels, tokens), tf.logical_not(subsequent))


def span_corruption(
    ds: tf.data.Dataset,
    eos_id: int,
    noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> tf.data.Dataset:
    """`{"tokens": [L]}` chunks -> `{"inputs", "targets"}` with sentinels and EOS appended.

    Non-noise spans of the targets are replaced by the same sentinels, so inputs and targets
    interleave back to the original chunk (`merge_spans`).
    """
    length = ds.element_spec["tokens"].shape[0]
    if length is None:
        raise ValueError("span_corruption needs fixed-length chunks (run concat_and_chunk first)")
    _, num_spans = noise_counts(length, noise_density, mean_span_length)
    if num_spans > NUM_SENTINELS:
        raise ValueError(f"{num_spans} noise spans exceed the {NUM_SENTINELS} sentinels")

    @seqio.map_over_dataset(num_seeds=2)
    def corrupt(ex, seeds):
        tokens = ex["tokens"]
        mask = random_spans_noise_mask(length, noise_density, mean_span_length, seeds)
        eos = tf.constant([eos_id], tf.int32)
        return {
            "inputs": tf.concat([replace_spans_with_sentinels(tokens, mask), eos], 0),
            "targets": tf.concat([replace_spans_with_sentinels(tokens, ~mask), eos], 0),
            "objective_id": tf.constant(0, tf.int32),
        }

    return corrupt(ds)


def merge_spans(inputs, targets, eos_id: int) -> list[int]:
    """Inverse of span corruption: re-inserts the target spans at their input sentinels.

    Args:
      inputs: Corrupted input ids; trailing padding (0) and the final EOS are dropped (chunks
        may contain `</s>` file separators, so this does not stop at the first EOS).
      targets: Target ids: sentinel, span tokens, sentinel, ... (same convention).
      eos_id: End-of-sequence id.

    Returns:
      The original token ids.

    Raises:
      ValueError: Sentinels are missing, repeated or out of order.
    """

    def cut(ids):
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        while ids and ids[-1] == 0:
            ids.pop()
        return ids[:-1] if ids and ids[-1] == eos_id else ids

    lo, hi = sentinel_id(NUM_SENTINELS - 1), sentinel_id(0)
    spans, current = {}, None
    for t in cut(targets):
        if lo <= t <= hi:
            if t in spans:
                raise ValueError(f"sentinel {t} repeated in targets")
            current = spans[t] = []
        elif current is None:
            raise ValueError("targets do not start with a sentinel")
        else:
            current.append(t)
    out = []
    for t in cut(inputs):
        if lo <= t <= hi:
            if t not in spans:
                raise ValueError(f"input sentinel {t} has no target span")
            out.extend(spans.pop(t))
        else:
            out.append(t)
    # A trailing target sentinel (chunk ends on non-noise) has an empty span.
    if any(spans.values()):
        raise ValueError(f"target spans never used: {sorted(spans)}")
    return out
