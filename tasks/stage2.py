"""Stage-2 (bimodal text-code) task and the feature converter for the bimodal objective.

CodeT5+ §3.2 trains text-code contrastive (ITC), matching (ITM) and two generation losses on
(docstring, function) pairs. Task `codet5p_stage2_<c>_bimodal` emits, per pair:

* `text_tokens`: `[CLS]` (1) + docstring + `</s>`, at most 128 tokens by default;
* `code_tokens`: `<s>` (1) + code + `</s>`, at most 420 (the `<s>` slot is what the matching
  head overwrites with `[ENC]`, as in the released retrieval script);
* `pair_ids`: int32 hash of the code text, equal for duplicate code (so the contrastive loss
  does not count a duplicate as a negative).

`BimodalFeatureConverter` pads these and derives the generation features (see its docstring).
"""

import functools
from collections.abc import Mapping

import seqio
import tensorflow as tf

from tasks.corpus_cache import CorpusSpec
from tasks.data_sources import PreparedCorpusSource
from tasks.vocabularies import CDEC_ID, TDEC_ID

DEFAULT_LENGTHS = {"text_tokens": 128, "code_tokens": 420}
GENERATION_KEYS = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")
_SPEC = seqio.FeatureConverter.FeatureSpec


class BimodalFeatureConverter(seqio.FeatureConverter):
    """Task features `text_tokens [Lt]`, `code_tokens [Lc]` (+ `pair_ids`) -> the stage-2 batch.

    Output keys (int32, padded with 0; `Lt`/`Lc` = task feature lengths):

    * `text_tokens [B, Lt]`: `[CLS]` text `</s>` (encoder input for the text side).
    * `code_tokens [B, Lc]`: `<s>` code `</s>` (encoder input for the code side; the matching
      decoder overwrites position 0 with `[ENC]`).
    * `pair_ids [B]`: same id = same code (duplicates), for contrastive positives.
    * `text_to_code_decoder_target_tokens [B, Lc]`: code `</s>` (code_tokens without `<s>`).
    * `text_to_code_decoder_input_tokens [B, Lc]`: `[CDEC]` (32102) + target shifted right.
    * `text_to_code_decoder_loss_weights [B, Lc]`: 1 on real target tokens.
    * `code_to_text_decoder_target_tokens [B, Lt]`: text `</s>`.
    * `code_to_text_decoder_input_tokens [B, Lt]`: `[TDEC]` (32101) + target shifted right.
    * `code_to_text_decoder_loss_weights [B, Lt]`.

    The text->code decoder cross-attends to the text encoding and the code->text decoder to the
    code encoding (`objectives/bimodal.py`). Packing is not supported.
    """

    TASK_FEATURES = {"text_tokens": _SPEC(tf.int32), "code_tokens": _SPEC(tf.int32)}
    MODEL_FEATURES = {
        "text_tokens": _SPEC(tf.int32),
        "code_tokens": _SPEC(tf.int32),
        "pair_ids": _SPEC(tf.int32, rank=0),
        **{f"text_to_code_{k}": _SPEC(tf.int32) for k in GENERATION_KEYS},
        **{f"code_to_text_{k}": _SPEC(tf.int32) for k in GENERATION_KEYS},
    }
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("BimodalFeatureConverter does not pack")
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds, task_feature_lengths):
        ds = self._pack_or_pad(ds, task_feature_lengths)

        def generation(tokens, start_id):
            # Drop the leading [CLS]/<s>; the freed last slot is padding.
            target = tf.concat([tokens[1:], tf.zeros([1], tokens.dtype)], 0)
            inputs = seqio.utils.make_autoregressive_inputs(target, bos_id=start_id)
            weights = tf.cast(tf.not_equal(target, 0), tf.int32)
            return dict(zip(GENERATION_KEYS, (inputs, target, weights), strict=True))

        def convert(ex):
            text, code = ex["text_tokens"], ex["code_tokens"]
            if "pair_ids" in ex:
                pair_ids = tf.cast(ex["pair_ids"], tf.int32)
            else:
                pair_ids = tf.constant(-1, tf.int32)
            out = {"text_tokens": text, "code_tokens": code, "pair_ids": pair_ids}
            out.update({f"text_to_code_{k}": v for k, v in generation(code, CDEC_ID).items()})
            out.update({f"code_to_text_{k}": v for k, v in generation(text, TDEC_ID).items()})
            return out

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]):
        lt, lc = task_feature_lengths["text_tokens"], task_feature_lengths["code_tokens"]
        lengths = {"text_tokens": lt, "code_tokens": lc, "pair_ids": 1}
        lengths.update({f"text_to_code_{k}": lc for k in GENERATION_KEYS})
        lengths.update({f"code_to_text_{k}": lt for k in GENERATION_KEYS})
        return lengths


def tokenize_pairs(ds: tf.data.Dataset, vocabulary) -> tf.data.Dataset:
    """`{"code", "docstring"}` -> `text_ids`, `code_ids` (no specials) and `pair_ids`."""

    def fn(ex):
        return {
            "text_ids": tf.cast(vocabulary.encode_tf(ex["docstring"]), tf.int32),
            "code_ids": tf.cast(vocabulary.encode_tf(ex["code"]), tf.int32),
            "pair_ids": tf.cast(tf.strings.to_hash_bucket_fast(ex["code"], 2**31 - 1), tf.int32),
        }

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def wrap_pairs(ds: tf.data.Dataset, sequence_length, *, defaults, cls_id: int, eos_id: int):
    """Truncates and wraps as `[CLS] ids </s>` to the requested (or default) lengths."""
    lengths = dict(defaults)
    for k, v in (sequence_length or {}).items():
        if k in lengths and v is not None:
            lengths[k] = min(lengths[k], int(v))
    if min(lengths.values()) < 3:
        raise ValueError(f"stage-2 lengths must be >= 3, got {lengths}")

    def wrap(ids, length):
        return tf.concat([[cls_id], ids[: length - 2], [eos_id]], 0)

    def fn(ex):
        return {
            "text_tokens": wrap(ex["text_ids"], lengths["text_tokens"]),
            "code_tokens": wrap(ex["code_ids"], lengths["code_tokens"]),
            "pair_ids": ex["pair_ids"],
        }

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def register_stage2_task(
    spec: CorpusSpec, vocabulary, lengths: Mapping[str, int] = DEFAULT_LENGTHS
) -> str:
    """Registers `codet5p_stage2_<c>_bimodal` over the corpus pairs; returns its name.

    `lengths` (text 128, code 420 by default) are capped by the requested sequence lengths, so a
    shorter run still gets `</s>`-terminated sequences.
    """
    name = f"codet5p_stage2_{spec.name}_bimodal"
    seqio.TaskRegistry.add(
        name,
        source=PreparedCorpusSource(spec, "pairs"),
        preprocessors=[
            functools.partial(tokenize_pairs, vocabulary=vocabulary),
            seqio.CacheDatasetPlaceholder(),
            functools.partial(
                wrap_pairs,
                defaults=dict(lengths),
                cls_id=vocabulary.cls_id,
                eos_id=vocabulary.eos_id,
            ),
        ],
        output_features={
            "text_tokens": seqio.Feature(vocabulary, add_eos=False),
            "code_tokens": seqio.Feature(vocabulary, add_eos=False),
            "pair_ids": seqio.Feature(
                seqio.PassThroughVocabulary(2**31 - 1), add_eos=False, required=False, rank=0
            ),
        },
    )
    return name
