"""Instruction tuning as the released CodeT5+ script does it (`instruct_tune_codet5p.py`,
CODET5P_FACTS §1.3), for any model family.

* Encoder input: the Alpaca prompt (`tasks.downstream.alpaca_prompt`, ending in
  `### Response:`), no EOS (CodeGen's tokenizer adds none).
* Decoder target: `prompt + output + EOS`, trimmed to the target length (a truncated example
  keeps no EOS, as the released script's truncating tokenizer); the prompt tokens and the
  padding carry loss weight 0, the output and its EOS weight 1.
* Decoder input: the target shifted right behind the decoder start id, by default the
  vocabulary's pad id: 50256 (`<|endoftext|>`, the released `decoder_start_id`) for CodeGen's
  vocabulary, 0 (T5's decoder start) for CodeT5's.

The prompt and the output are tokenised separately and concatenated, so the decoder's prompt
tokens are exactly the encoder's (the released script tokenises `prompt + output` as one string,
which can merge a BPE token across the boundary).

`InstructFeatureConverter` pads to the run's lengths and also emits `encoder_input_mask`, since
a pad id of 0 is a real token (`!`) in CodeGen's vocabulary.
"""

import hashlib
import os
import pathlib

import seqio
import tensorflow as tf

import gin
from tasks.corpus_cache import SPLITS
from tasks.downstream import read_alpaca
from tasks.vocabularies import CodeGenVocabulary, CodeT5Vocabulary

gin.external_configurable(CodeGenVocabulary, module="tasks")
gin.external_configurable(CodeT5Vocabulary, module="tasks")

INSTRUCT_TUNE_LENGTHS = {"inputs": 512, "targets": 512}  # the released --max-len 512
_REGISTERED: dict[str, tuple] = {}


def build_example(prompt_ids, output_ids, *, lengths, eos_id: int, start_id: int) -> dict:
    """The instruction-tuning features of one tokenised example (tf ops).

    Returns:
      `inputs`, `targets`, `decoder_inputs`, `targets_loss_weights` (int32, unpadded).
    """
    prompt_ids = tf.cast(prompt_ids, tf.int32)
    full = tf.concat([prompt_ids, tf.cast(output_ids, tf.int32), [eos_id]], axis=0)
    targets = full[: lengths["targets"]]
    n = tf.shape(targets)[0]
    prompt_len = tf.minimum(tf.shape(prompt_ids)[0], n)
    weights = tf.cast(tf.range(n) >= prompt_len, tf.int32)
    return {
        "inputs": prompt_ids[: lengths["inputs"]],
        "targets": targets,
        "decoder_inputs": tf.concat([[start_id], targets[:-1]], axis=0),
        "targets_loss_weights": weights,
    }


def _preprocessor(start_id: int | None):
    def preprocess(ds, output_features, sequence_length):
        vocab = output_features["targets"].vocabulary
        start = vocab.pad_id if start_id is None else start_id
        lengths = sequence_length or INSTRUCT_TUNE_LENGTHS

        def build(ex):
            return build_example(
                vocab.encode_tf(ex["prompt"]),
                vocab.encode_tf(ex["output"]),
                lengths=lengths,
                eos_id=vocab.eos_id,
                start_id=start,
            )

        return ds.map(build, num_parallel_calls=tf.data.AUTOTUNE)

    return preprocess


@gin.configurable(module="tasks")
def instruct_task(
    name: str = "alpaca",
    path: str | os.PathLike = gin.REQUIRED,
    vocabulary=None,
    decoder_start_id: int | None = None,
    validation_fraction: float = 0.05,
) -> str:
    """Registers `codet5p_instruct_tune_<name>` over Alpaca-format data; returns its name.

    For gin, `MIXTURE_OR_TASK_NAME = @tasks.instruct_task` (no parentheses): the trainer calls
    it when it reads data, so `codet5p plan` needs no data file.

    Args:
      name: Suffix of the task name.
      path: Alpaca JSON list (or JSONL) of `instruction`, `input`, `output` (ALPACA_PATH).
      vocabulary: The model's vocabulary (default `CodeT5Vocabulary()`; CodeT5+ 2B-16B use
        `CodeGenVocabulary(<tokenizer dir>)`).
      decoder_start_id: Decoder start token; None = the vocabulary's pad id (see module doc).
      validation_fraction: Share of prompts hashed into `validation`.

    Raises:
      ValueError: `path` unset; FileNotFoundError: `path` missing.
    """
    if path is gin.REQUIRED or not path:
        raise ValueError(
            "ALPACA_PATH is not set: pass the Alpaca-format JSON, e.g. "
            "--gin.ALPACA_PATH=\"'/data/code_alpaca_20k.json'\""
        )
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ALPACA_PATH {path} not found")
    vocabulary = CodeT5Vocabulary() if vocabulary is None else vocabulary
    task_name = f"codet5p_instruct_tune_{name}"
    key = (str(path), vocabulary, decoder_start_id, validation_fraction)
    if _REGISTERED.get(task_name) == key:
        return task_name
    if task_name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(task_name)

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        rows, _ = read_alpaca(path)

        def is_val(r):
            h = int(hashlib.sha1(r["prompt"].encode()).hexdigest()[:8], 16)
            return h < validation_fraction * 2**32

        rows = [r for r in rows if is_val(r) == (split == "validation")]
        if not rows:
            raise ValueError(f"{task_name}: split {split!r} of {path} is empty")
        return tf.data.Dataset.from_tensor_slices(
            {k: [r[k] for r in rows] for k in ("prompt", "output")}
        )

    seqio.TaskRegistry.add(
        task_name,
        source=seqio.FunctionDataSource(dataset_fn, splits=SPLITS),
        preprocessors=[_preprocessor(decoder_start_id)],
        output_features={
            "inputs": seqio.Feature(vocabulary, add_eos=False),
            "targets": seqio.Feature(vocabulary, add_eos=False),
        },
    )
    _REGISTERED[task_name] = key
    return task_name


class InstructFeatureConverter(seqio.FeatureConverter):
    """Pads `instruct_task` examples into training batches (no packing).

    Model features (int32): `encoder_input_tokens [B, S]`, `encoder_input_mask [B, S]`
    (1 = real token), `decoder_input_tokens [B, T]` (start id + target shifted right),
    `decoder_target_tokens [B, T]`, `decoder_loss_weights [B, T]` (0 on the prompt and padding).
    """

    TASK_FEATURES = {
        "inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES = {
        k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
        for k in (
            "encoder_input_tokens",
            "encoder_input_mask",
            "decoder_input_tokens",
            "decoder_target_tokens",
            "decoder_loss_weights",
        )
    }
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("InstructFeatureConverter does not pack (one prompt per row)")
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds, task_feature_lengths):
        missing = {"decoder_inputs", "targets_loss_weights"} - set(ds.element_spec)
        if missing:
            raise ValueError(
                "InstructFeatureConverter needs an instruct_task dataset (features "
                f"{sorted(missing)} are missing)"
            )
        n_in, n_tg = task_feature_lengths["inputs"], task_feature_lengths["targets"]

        def pad(x, length):
            x = tf.cast(x[:length], tf.int32)
            return tf.ensure_shape(tf.pad(x, [[0, length - tf.shape(x)[0]]]), [length])

        def convert(ex):
            return {
                "encoder_input_tokens": pad(ex["inputs"], n_in),
                "encoder_input_mask": pad(tf.ones_like(ex["inputs"]), n_in),
                "decoder_input_tokens": pad(ex["decoder_inputs"], n_tg),
                "decoder_target_tokens": pad(ex["targets"], n_tg),
                "decoder_loss_weights": pad(ex["targets_loss_weights"], n_tg),
            }

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths):
        n_in, n_tg = task_feature_lengths["inputs"], task_feature_lengths["targets"]
        return {
            "encoder_input_tokens": n_in,
            "encoder_input_mask": n_in,
            "decoder_input_tokens": n_tg,
            "decoder_target_tokens": n_tg,
            "decoder_loss_weights": n_tg,
        }


gin.external_configurable(InstructFeatureConverter, module="tasks")
