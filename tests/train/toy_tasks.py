"""A tiny learnable SeqIO task for trainer tests: reverse a random token sequence.

Registered as `toy_reverse` on import; tokens are ids in [5, 200) of the real 32103-row
vocabulary (pass-through vocabulary, so no tokenizer is needed). Examples are a pure function
of their index, so every run (and every process) sees the same data.
"""

import numpy as np
import seqio
import tensorflow as tf

NAME = "toy_reverse"
NUM_EXAMPLES = 512


def _examples(split: str, shuffle_files: bool = False, seed: int | None = None):
    del shuffle_files, seed
    rng = np.random.default_rng(0 if split == "train" else 1)
    lengths = rng.integers(4, 12, NUM_EXAMPLES)
    inputs = [rng.integers(5, 200, n).astype(np.int32) for n in lengths]
    ids = np.arange(NUM_EXAMPLES) % 3

    def gen():
        for x, k in zip(inputs, ids, strict=True):
            yield {"inputs": x, "targets": x[::-1].copy(), "objective_ids": np.int32(k)}

    sig = {
        "inputs": tf.TensorSpec([None], tf.int32),
        "targets": tf.TensorSpec([None], tf.int32),
        "objective_ids": tf.TensorSpec([], tf.int32),
    }
    return tf.data.Dataset.from_generator(gen, output_signature=sig)


class ToyConverter(seqio.EncDecFeatureConverter):
    """EncDec converter that also passes the per-example `objective_ids` through."""

    TASK_FEATURES = {
        **seqio.EncDecFeatureConverter.TASK_FEATURES,
        "objective_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0),
    }
    MODEL_FEATURES = {
        **seqio.EncDecFeatureConverter.MODEL_FEATURES,
        "objective_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0),
    }

    def _convert_features(self, ds, task_feature_lengths):
        ids = ds.map(lambda ex: ex["objective_ids"])
        lengths = {k: v for k, v in task_feature_lengths.items() if k != "objective_ids"}
        converted = super()._convert_features(ds, lengths)
        return tf.data.Dataset.zip((converted, ids)).map(lambda f, i: {**f, "objective_ids": i})

    def get_model_feature_lengths(self, task_feature_lengths):
        return super().get_model_feature_lengths(
            {k: v for k, v in task_feature_lengths.items() if k != "objective_ids"}
        )


if NAME not in seqio.TaskRegistry.names():
    vocab = seqio.PassThroughVocabulary(size=32103, eos_id=2)
    seqio.TaskRegistry.add(
        NAME,
        source=seqio.FunctionDataSource(_examples, splits=["train", "validation"]),
        preprocessors=[seqio.preprocessors.append_eos_after_trim],
        output_features={
            "inputs": seqio.Feature(vocab, add_eos=True),
            "targets": seqio.Feature(vocab, add_eos=True),
        },
        metric_fns=[],
    )
