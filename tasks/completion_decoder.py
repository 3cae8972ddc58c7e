"""Line completion in decoder-only mode (CodeT5+ paper §3.1.2, App. D: decoder length 1024).

The encoder input is just `[CLM]`, as in stage-1 decoder-only causal LM; the decoder reads the
left context and continues with the next line. The loss covers only the next line and its EOS:
the context is teacher-forced input, not a target.

* `decoder_only_completion`: tokenised `{inputs: context, targets: line}` ->
  `{inputs: [CLM], targets: context + line + EOS, targets_loss_mask: 0 .. 0 1 .. 1}`. The line
  keeps its first `max_line_tokens` tokens (at most the `targets` length minus 2, so one context
  token always fits); the context keeps its last tokens, filling the `targets` length.
* `CompletionDecoderFeatureConverter`: `seqio.EncDecFeatureConverter` whose
  `decoder_loss_weights` is that mask (padded with 0) instead of "every real target token".
"""

from collections.abc import Mapping

import seqio
import tensorflow as tf

MASK_KEY = "targets_loss_mask"


def decoder_only_completion(
    ds, sequence_length=None, output_features=None, *, clm_id: int, eos_id: int, max_line_tokens
):
    """SeqIO preprocessor (after tokenisation): the decoder-only example; see the module doc."""
    del output_features
    if not sequence_length or "targets" not in sequence_length:
        raise ValueError(
            f"decoder-only completion needs a `targets` length (the decoder's), got "
            f"{sequence_length}"
        )
    length = sequence_length["targets"]
    if length < 3:
        raise ValueError(f"decoder-only completion needs targets >= 3, got {length}")
    line_cap = min(max_line_tokens, length - 2)

    def fn(ex):
        line = ex["targets"][:line_cap]
        budget = length - 1 - tf.shape(line)[0]
        context = ex["inputs"]
        context = context[tf.maximum(tf.shape(context)[0] - budget, 0) :]
        n_ctx, n_tgt = tf.shape(context)[0], tf.shape(line)[0] + 1
        return {
            "inputs": tf.constant([clm_id], tf.int32),
            "targets": tf.concat([context, line, [eos_id]], 0),
            MASK_KEY: tf.concat([tf.zeros([n_ctx], tf.int32), tf.ones([n_tgt], tf.int32)], 0),
        }

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


class CompletionDecoderFeatureConverter(seqio.EncDecFeatureConverter):
    """EncDec batches whose `decoder_loss_weights` is the task's `targets_loss_mask`.

    Output features as `seqio.EncDecFeatureConverter` (`encoder_input_tokens` = `[CLM]`,
    `decoder_input_tokens`, `decoder_target_tokens`, `decoder_loss_weights`). No packing.
    """

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("CompletionDecoderFeatureConverter does not pack")
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds, task_feature_lengths: Mapping[str, int]):
        if MASK_KEY not in ds.element_spec:
            raise ValueError(
                f"CompletionDecoderFeatureConverter needs a `{MASK_KEY}` feature (the "
                "decoder-only completion task emits it: register_line_completion.mode = "
                f"'decoder_only'); got {sorted(ds.element_spec)}"
            )
        lengths = {**task_feature_lengths, MASK_KEY: task_feature_lengths["targets"]}
        ds = self._pack_or_pad(ds, lengths)

        def convert(ex):
            out = dict(self._convert_example(ex))
            out["decoder_loss_weights"] = tf.cast(ex[MASK_KEY], tf.int32)
            return out

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
