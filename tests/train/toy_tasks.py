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


RECORDS_NAME = "toy_records"
RECORDS_ENV = "TOY_RECORDS_PATH"  # a TFRecord file of toy examples (tests write, and damage, it)


def write_records(path, count: int = 64) -> None:
    """Writes `count` toy examples (`inputs`, reversed `targets`) as tf.Example records."""
    rng = np.random.default_rng(2)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            x = rng.integers(5, 200, int(rng.integers(4, 12))).astype(np.int64)
            feats = {
                "inputs": tf.train.Feature(int64_list=tf.train.Int64List(value=x)),
                "targets": tf.train.Feature(int64_list=tf.train.Int64List(value=x[::-1])),
                "objective_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 3])),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
            )


def _records(split: str, shuffle_files: bool = False, seed: int | None = None):
    del split, shuffle_files, seed
    import os

    spec = {
        "inputs": tf.io.VarLenFeature(tf.int64),
        "targets": tf.io.VarLenFeature(tf.int64),
        "objective_id": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        return {
            "inputs": tf.cast(tf.sparse.to_dense(ex["inputs"]), tf.int32),
            "targets": tf.cast(tf.sparse.to_dense(ex["targets"]), tf.int32),
            "objective_id": tf.cast(ex["objective_id"], tf.int32),
        }

    return tf.data.TFRecordDataset(os.environ[RECORDS_ENV]).map(parse)


if RECORDS_NAME not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        RECORDS_NAME,
        source=seqio.FunctionDataSource(_records, splits=["train", "validation"]),
        preprocessors=[seqio.preprocessors.append_eos_after_trim],
        output_features={
            "inputs": seqio.Feature(
                seqio.PassThroughVocabulary(size=32103, eos_id=2), add_eos=True
            ),
            "targets": seqio.Feature(
                seqio.PassThroughVocabulary(size=32103, eos_id=2), add_eos=True
            ),
        },
    )
