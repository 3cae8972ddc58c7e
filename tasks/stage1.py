"""Stage-1 (unimodal code) tasks and the feature converter that keeps `objective_ids`.

Tasks per corpus `<c>` (paper §3.1, default lengths in `DEFAULT_LENGTHS`):
* `codet5p_stage1_<c>_span_denoise`: span corruption, 15 % noise, mean span 3; inputs 512.
* `codet5p_stage1_<c>_seq2seq_clm`: `[CLM]` + prefix -> suffix, pivot uniform in 10-90 %.
* `codet5p_stage1_<c>_decoder_clm`: `[CLM]` -> whole chunk (decoder 1024).
Every example carries `objective_id` (0, 1, 2); `Stage1FeatureConverter` turns it into the
batch feature `objective_ids [B]`.
"""

import functools
from collections.abc import Mapping

import seqio
import tensorflow as tf

from tasks import causal_lm, chunking, span_corruption
from tasks.corpus_cache import CorpusSpec
from tasks.data_sources import PreparedCorpusSource, TokenizedCorpusSource

OBJECTIVES = ("span_denoise", "seq2seq_clm", "decoder_clm")  # index = objective id
DEFAULT_LENGTHS = {
    "span_denoise": {"inputs": 512, "targets": 114},
    "seq2seq_clm": {"inputs": 768, "targets": 600},
    "decoder_clm": {"inputs": 1, "targets": 1024},
}
# The joint mixture pads every objective to the longest encoder and decoder lengths.
JOINT_LENGTHS = {"inputs": 768, "targets": 1024}


class Stage1FeatureConverter(seqio.EncDecFeatureConverter):
    """`seqio.EncDecFeatureConverter` that also emits `objective_ids [B]` (int32).

    Output features (t5x names, padded with 0): `encoder_input_tokens [B, S]`,
    `decoder_input_tokens [B, T]` (targets shifted right, starting with 0),
    `decoder_target_tokens [B, T]`, `decoder_loss_weights [B, T]` (1 on real target tokens),
    `objective_ids [B]` (0 span denoising, 1 seq2seq causal LM, 2 decoder-only causal LM).
    Packing is not supported (one objective per row). Task feature lengths: `inputs`, `targets`.
    """

    MODEL_FEATURES = {
        **seqio.EncDecFeatureConverter.MODEL_FEATURES,
        "objective_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0),
    }

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("Stage1FeatureConverter does not pack: objective_ids is per row")
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds, task_feature_lengths):
        if "objective_id" not in ds.element_spec:
            raise ValueError(
                "Stage1FeatureConverter needs an `objective_id` feature (stage-1 tasks emit it); "
                f"got {sorted(ds.element_spec)}"
            )
        ds = self._pack_or_pad(ds, task_feature_lengths)

        def convert(ex):
            out = dict(self._convert_example(ex))
            out["objective_ids"] = tf.cast(ex["objective_id"], tf.int32)
            return out

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]):
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        lengths["objective_ids"] = 1  # rank 0: the length is not checked
        return lengths


def output_features(vocabulary) -> dict[str, seqio.Feature]:
    """Output features shared by all stage-1 tasks (EOS is appended by the preprocessors)."""
    return {
        "inputs": seqio.Feature(vocabulary, add_eos=False),
        "targets": seqio.Feature(vocabulary, add_eos=False),
        "objective_id": seqio.Feature(
            seqio.PassThroughVocabulary(len(OBJECTIVES)), add_eos=False, required=False, rank=0
        ),
    }


def effective_lengths(
    sequence_length: Mapping[str, int] | None, defaults: Mapping[str, int]
) -> dict[str, int]:
    """Registered lengths capped by the runtime `sequence_length` (e.g. a tiny test run).

    A joint mixture asks for 768 / 1024, so every objective keeps its own paper lengths; a run
    asking for less gets examples that fit instead of truncated ones (EOS and sentinels kept).
    """
    out = dict(defaults)
    for k, v in (sequence_length or {}).items():
        if k in out and v is not None:
            out[k] = min(out[k], int(v))
    return out


def _chunks_or_error(ds, chunk_length: int, eos_id: int):
    """Concatenates and chunks; fails here, in Python, when not even one chunk comes out.

    Without this a corpus whose files all miss the size filter would give an empty dataset and
    a trainer would stop (or spin on `repeat()`) far from the cause. Peeking builds one chunk
    (reads a few files); it draws no random seeds, so determinism is unaffected.
    """
    ds = chunking.concat_and_chunk(ds, chunk_length, eos_id)
    if next(iter(ds.take(1)), None) is None:
        raise ValueError(
            f"stage-1 data yields no {chunk_length}-token chunk: no file passed the size filter "
            "(min_file_tokens / max_file_tokens of register_corpus) or the corpus is too small"
        )
    return ds


def span_denoise_step(ds, sequence_length, *, defaults, eos_id):
    """Chunks to the length whose corruption fills `inputs`, then corrupts spans."""
    lengths = effective_lengths(sequence_length, defaults)
    inputs_length = lengths["inputs"]
    while True:
        chunk, targets = span_corruption.chunk_and_target_lengths(inputs_length)
        if targets <= lengths["targets"]:
            break
        if inputs_length <= 8:
            raise ValueError(f"span denoising cannot fit targets length {lengths['targets']}")
        inputs_length -= 1
    ds = _chunks_or_error(ds, chunk, eos_id)
    return span_corruption.span_corruption(ds, eos_id=eos_id)


def seq2seq_clm_step(ds, sequence_length, *, defaults, clm_id, eos_id):
    """Chunks so source and target can fill their lengths, then splits at a random pivot."""
    lengths = effective_lengths(sequence_length, defaults)
    if lengths["inputs"] < 3 or lengths["targets"] < 2:
        raise ValueError(f"seq2seq causal LM needs inputs >= 3 and targets >= 2, got {lengths}")
    chunk = causal_lm.seq2seq_chunk_length(lengths["inputs"], lengths["targets"])
    ds = _chunks_or_error(ds, chunk, eos_id)
    return causal_lm.seq2seq_causal_lm(
        ds, clm_id, eos_id, source_length=lengths["inputs"], target_length=lengths["targets"]
    )


def decoder_clm_step(ds, sequence_length, *, defaults, clm_id, eos_id):
    """Chunks to `targets - 1` tokens; the encoder input is `[CLM]` alone."""
    lengths = effective_lengths(sequence_length, defaults)
    if lengths["targets"] < 2:
        raise ValueError(f"decoder-only causal LM needs targets >= 2, got {lengths}")
    ds = _chunks_or_error(ds, lengths["targets"] - 1, eos_id)
    return causal_lm.decoder_only_causal_lm(ds, clm_id, eos_id)


def register_stage1_tasks(
    spec: CorpusSpec,
    vocabulary,
    lengths: Mapping[str, Mapping[str, int]] = DEFAULT_LENGTHS,
    min_file_tokens: int | None = chunking.MIN_FILE_TOKENS,
    max_file_tokens: int | None = chunking.MAX_FILE_TOKENS,
    pretokenize: bool = True,
) -> dict[str, str]:
    """Registers the three stage-1 tasks over `spec`; returns `{objective: task_name}`.

    Args:
      spec: Corpus to read (its `code` stream).
      vocabulary: A `CodeT5Vocabulary`.
      lengths: Per objective `{"inputs": S, "targets": T}` (defaults: paper §4.1 lengths),
        capped at run time by the requested `sequence_length`.
      min_file_tokens: Drop files shorter than this (paper: 50).
      max_file_tokens: Drop files longer than this (paper: 2,000).
      pretokenize: Read the corpus tokenized and size-filtered once (`tasks.token_cache`,
        shared by the three tasks); False tokenizes inside tf.data on every epoch (the same
        ids, several times slower).
    """
    if pretokenize:
        source = TokenizedCorpusSource(spec, vocabulary, min_file_tokens, max_file_tokens)
        select = chunking.select_tokenized
    else:
        source = PreparedCorpusSource(spec, "code")
        select = functools.partial(
            chunking.tokenize_and_filter,
            vocabulary=vocabulary,
            min_tokens=min_file_tokens,
            max_tokens=max_file_tokens,
        )
    feats = output_features(vocabulary)
    ids = {"eos_id": vocabulary.eos_id}
    steps = {
        "span_denoise": functools.partial(
            span_denoise_step, defaults=lengths["span_denoise"], **ids
        ),
        "seq2seq_clm": functools.partial(
            seq2seq_clm_step, defaults=lengths["seq2seq_clm"], clm_id=vocabulary.clm_id, **ids
        ),
        "decoder_clm": functools.partial(
            decoder_clm_step, defaults=lengths["decoder_clm"], clm_id=vocabulary.clm_id, **ids
        ),
    }
    names = {}
    for objective, step in steps.items():
        name = f"codet5p_stage1_{spec.name}_{objective}"
        seqio.TaskRegistry.add(
            name,
            source=source,
            # Keep the placeholder at index 1 either way: seqio derives the post-cache map
            # seeds from its index, so both paths give the same span masks and pivots.
            preprocessors=[select, seqio.CacheDatasetPlaceholder(), step],
            output_features=feats,
        )
        names[objective] = name
    return names
