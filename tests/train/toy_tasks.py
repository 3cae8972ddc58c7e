"""A tiny learnable SeqIO task for trainer tests: reverse a random token sequence.

Registered as `toy_reverse` on import; tokens are ids in [5, 200) of the real 32103-row
vocabulary (pass-through vocabulary, so no tokenizer is needed). Examples are a pure function
of their index, so every run (and every process) sees the same data. Batches go through the
stage-1 feature converter (`tasks.Stage1FeatureConverter`), which adds `objective_ids`.
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
            yield {"inputs": x, "targets": x[::-1].copy(), "objective_id": np.int32(k)}

    sig = {
        "inputs": tf.TensorSpec([None], tf.int32),
        "targets": tf.TensorSpec([None], tf.int32),
        "objective_id": tf.TensorSpec([], tf.int32),
    }
    return tf.data.Dataset.from_generator(gen, output_signature=sig)


def exact_match(targets, predictions) -> dict[str, float]:
    """Share of predictions equal to their target (a seqio metric_fn)."""
    hits = [list(t) == list(p) for t, p in zip(targets, predictions, strict=True)]
    return {"exact_match": 100.0 * sum(hits) / max(len(hits), 1)}


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
        metric_fns=[exact_match],
    )
