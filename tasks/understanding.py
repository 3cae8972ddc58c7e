"""SeqIO tasks over the CodeXGLUE understanding and completion benchmarks (user paths).

* `register_defect` -> `codet5p_defect_<name>`: inputs (code), label; batches from
  `ClassificationFeatureConverter`.
* `register_clone_pairs` -> `codet5p_clone_<name>`: inputs, inputs2, label; `PairFeatureConverter`.
* `register_poj104` -> `codet5p_poj104_<name>`: inputs, label and index (strings), for embedding.
* `register_line_completion` -> `codet5p_completion_<name>`: inputs (context), targets (next
  line); `seqio.EncDecFeatureConverter`. With `mode="decoder_only"` ->
  `codet5p_completion_<name>_decoder`: `[CLM]` in, context + next line as the decoder sequence,
  loss on the line only (`tasks.completion_decoder`, `CompletionDecoderFeatureConverter`).

Splits are `train`, `validation` and `test` (the benchmark's own files; see `tasks.codexglue`).
Files are read when a split is first requested. Each function is gin-configurable and returns
the task name, so an experiment gin can say `MIXTURE_OR_TASK_NAME = @register_defect()`.
Paper lengths (CODET5P_FACTS App. D): defect 512, clone 400 per function, completion decoder 1024.
"""

import functools
import pathlib

import seqio
import tensorflow as tf

import gin
from tasks import codexglue, completion_decoder

DEFECT_LENGTHS = {"inputs": 512}
CLONE_LENGTHS = {"inputs": 400}
POJ104_LENGTHS = {"inputs": 512}
COMPLETION_LENGTHS = {"inputs": 1024, "targets": 128}
COMPLETION_DECODER_LENGTHS = {"inputs": 1, "targets": 1024}
COMPLETION_MODES = ("seq2seq", "decoder_only")
SPLITS = ("train", "validation", "test")
_SPEC = seqio.FeatureConverter.FeatureSpec


class ClassificationFeatureConverter(seqio.FeatureConverter):
    """`inputs [S]`, `label []` -> `encoder_input_tokens [B, S]` (0-padded), `labels [B]`."""

    TASK_FEATURES = {"inputs": _SPEC(tf.int32), "label": _SPEC(tf.int32, rank=0)}
    MODEL_FEATURES = {"encoder_input_tokens": _SPEC(tf.int32), "labels": _SPEC(tf.int32, rank=0)}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError(f"{type(self).__name__} does not pack")
        super().__init__(pack=False, **kwargs)

    def __call__(self, ds, task_feature_lengths):
        """TASK_FEATURE_LENGTHS names `inputs` only: the label (and a pair's second function)
        take their lengths from it."""
        lengths = dict(task_feature_lengths)
        missing = {"label": 1, "inputs2": lengths.get("inputs")}
        lengths.update({k: v for k, v in missing.items() if k in self.TASK_FEATURES})
        return super().__call__(ds, {k: lengths[k] for k in self.TASK_FEATURES})

    def _convert_features(self, ds, task_feature_lengths):
        ds = self._pack_or_pad(ds, {"inputs": task_feature_lengths["inputs"]})
        return ds.map(
            lambda ex: {"encoder_input_tokens": ex["inputs"], "labels": ex["label"]},
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def get_model_feature_lengths(self, task_feature_lengths):
        return {"encoder_input_tokens": task_feature_lengths["inputs"], "labels": 1}


class PairFeatureConverter(ClassificationFeatureConverter):
    """`inputs`, `inputs2 [S]`, `label` -> `encoder_input_tokens [B, 2, S]`, `labels [B]`.

    Both functions of a pair get the `inputs` length (CodeT5's clone model: `max_source_length`
    per function).
    """

    TASK_FEATURES = {
        "inputs": _SPEC(tf.int32),
        "inputs2": _SPEC(tf.int32),
        "label": _SPEC(tf.int32, rank=0),
    }
    MODEL_FEATURES = {
        "encoder_input_tokens": _SPEC(tf.int32, rank=2, sequence_dim=1),
        "labels": _SPEC(tf.int32, rank=0),
    }

    def _convert_features(self, ds, task_feature_lengths):
        length = task_feature_lengths["inputs"]
        ds = self._pack_or_pad(ds, {"inputs": length, "inputs2": length})
        return ds.map(
            lambda ex: {
                "encoder_input_tokens": tf.stack([ex["inputs"], ex["inputs2"]]),
                "labels": ex["label"],
            },
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def get_model_feature_lengths(self, task_feature_lengths):
        return {"encoder_input_tokens": task_feature_lengths["inputs"], "labels": 1}


def _vocabulary(vocabulary):
    if vocabulary is None:
        from tasks.vocabularies import CodeT5Vocabulary

        return CodeT5Vocabulary()
    return vocabulary


def _source(read, fields: dict[str, tf.TensorSpec]):
    """A `FunctionDataSource` whose split `s` is `read(s)`: a list of dicts, or a zero-argument
    callable that yields them (re-invoked every epoch: a large file is streamed, never held).

    `read` runs when the dataset is built, so a malformed file fails there with its one-line
    `FormatError` rather than inside tf.data.
    """

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        rows = read(split)
        stream = rows if callable(rows) else lambda: rows
        return tf.data.Dataset.from_generator(
            lambda: ({k: r[k] for k in fields} for r in stream()), output_signature=fields
        )

    return seqio.FunctionDataSource(dataset_fn, splits=SPLITS, num_input_examples=None)


_STR = tf.TensorSpec([], tf.string)
_INT = tf.TensorSpec([], tf.int32)


def _add(name, source, preprocessors, features) -> str:
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)  # a re-registration may point at other files
    seqio.TaskRegistry.add(
        name, source=source, preprocessors=preprocessors, output_features=features
    )
    return name


def _eos_features(vocabulary, keys) -> dict[str, seqio.Feature]:
    return {k: seqio.Feature(vocabulary, add_eos=True) for k in keys}


_TOKENIZE = [
    seqio.preprocessors.tokenize,
    seqio.CacheDatasetPlaceholder(),
    seqio.preprocessors.append_eos_after_trim,
]


@gin.configurable(denylist=["vocabulary"])
def register_defect(name: str = "devign", data_dir: str = gin.REQUIRED, vocabulary=None) -> str:
    """Registers `codet5p_defect_<name>` over Devign files in `data_dir`; returns the name.

    Each example is the whitespace-normalised function + `</s>` (truncated to the `inputs`
    length first, as CodeT5's `max_source_length`), and its 0/1 `label` (1 = vulnerable).
    """
    read = lambda split: codexglue.read_devign(data_dir, split)  # noqa: E731
    source = _source(read, {"code": _STR, "label": _INT})
    rekey = functools.partial(
        seqio.preprocessors.rekey, key_map={"inputs": "code", "label": "label"}
    )
    features = _eos_features(_vocabulary(vocabulary), ["inputs"])
    return _add(f"codet5p_defect_{name}", source, [rekey, *_TOKENIZE], features)


@gin.configurable(denylist=["vocabulary"])
def register_clone_pairs(name: str = "bcb", data_dir: str = gin.REQUIRED, vocabulary=None) -> str:
    """Registers `codet5p_clone_<name>` over BigCloneBench files in `data_dir`; returns it."""
    read = lambda split: codexglue.read_bcb(data_dir, split)  # noqa: E731
    source = _source(read, {"code1": _STR, "code2": _STR, "label": _INT})
    rekey = functools.partial(
        seqio.preprocessors.rekey, key_map={"inputs": "code1", "inputs2": "code2", "label": "label"}
    )
    features = _eos_features(_vocabulary(vocabulary), ["inputs", "inputs2"])
    steps = [rekey, *_TOKENIZE[:2], append_eos_after_trim_pair]
    return _add(f"codet5p_clone_{name}", source, steps, features)


@gin.configurable(denylist=["vocabulary"])
def register_poj104(name: str = "poj104", data_dir: str = gin.REQUIRED, vocabulary=None) -> str:
    """Registers `codet5p_poj104_<name>` (programs, problem `label` and `index` as strings)."""
    read = lambda split: codexglue.read_poj104(data_dir, split)  # noqa: E731
    source = _source(read, {"code": _STR, "label": _STR, "index": _STR})
    rekey = functools.partial(
        seqio.preprocessors.rekey, key_map={"inputs": "code", "label": "label", "index": "index"}
    )
    features = _eos_features(_vocabulary(vocabulary), ["inputs"])
    return _add(f"codet5p_poj104_{name}", source, [rekey, *_TOKENIZE], features)


def read_completion_split(data_dir, split: str, **kwargs):
    """A completion split: `train.txt` (token level); `dev.json` or else `dev.txt`; `test.json`.

    Token-level files are checked once, then streamed (a callable, see `_source`).
    """
    data_dir = pathlib.Path(data_dir)
    if split == "train" or (split == "validation" and not (data_dir / "dev.json").is_file()):
        path = data_dir / ("train.txt" if split == "train" else "dev.txt")
        codexglue.check_token_streams(path)
        return lambda: codexglue.read_token_streams(path, **kwargs)
    return codexglue.read_line_completion(
        data_dir / ("dev.json" if split == "validation" else "test.json")
    )


@gin.configurable(denylist=["vocabulary"])
def register_line_completion(
    name: str = "py150",
    data_dir: str = gin.REQUIRED,
    vocabulary=None,
    max_context_tokens: int = 1024,
    lines_per_file: int | None = None,
    mode: str = "seq2seq",
    max_line_tokens: int = 128,
) -> str:
    """Registers a line-completion task (context -> next line) over `data_dir`.

    `data_dir` holds CodeXGLUE's token-level `train.txt` (training examples are cut from it at
    line breaks) and line-level `dev.json` / `test.json`. Inputs keep the `<s>` / `<EOL>`
    markers and literal placeholders of the data (the format the metrics compare in); targets
    are the next line's tokens.

    * `mode="seq2seq"` -> `codet5p_completion_<name>`: the context is the encoder input,
      left-truncated: `max_context_tokens` data tokens here, then the `inputs` length after
      tokenisation keeps the last tokens.
    * `mode="decoder_only"` -> `codet5p_completion_<name>_decoder`: the encoder input is `[CLM]`
      and the decoder sequence (`targets` length) is the context's last tokens, the line (its
      first `max_line_tokens`) and EOS; only the line and EOS carry loss. Train with
      `tasks.CompletionDecoderFeatureConverter`.
    """
    if mode not in COMPLETION_MODES:
        raise ValueError(
            f"register_line_completion.mode must be one of {COMPLETION_MODES}, got {mode!r}"
        )
    kwargs = dict(max_context_tokens=max_context_tokens, lines_per_file=lines_per_file)

    def read(split):
        return read_completion_split(data_dir, split, **kwargs)

    source = _source(read, {"input": _STR, "target": _STR})
    rekey = functools.partial(
        seqio.preprocessors.rekey, key_map={"inputs": "input", "targets": "target"}
    )
    vocab = _vocabulary(vocabulary)
    if mode == "decoder_only":
        to_decoder = functools.partial(
            completion_decoder.decoder_only_completion,
            clm_id=vocab.clm_id,
            eos_id=vocab.eos_id,
            max_line_tokens=max_line_tokens,
        )
        features = {k: seqio.Feature(vocab, add_eos=False) for k in ("inputs", "targets")}
        return _add(
            f"codet5p_completion_{name}_decoder", source, [rekey, *_TOKENIZE[:2], to_decoder],
            features,
        )  # fmt: skip
    return _add(
        f"codet5p_completion_{name}",
        source,
        [rekey, *_TOKENIZE[:2], keep_last_input_tokens, _TOKENIZE[2]],
        _eos_features(vocab, ["inputs", "targets"]),
    )


def append_eos_after_trim_pair(ds, sequence_length=None, output_features=None):
    """`append_eos_after_trim` with the second function trimmed to the `inputs` length too."""
    if sequence_length and "inputs" in sequence_length:
        sequence_length = {**sequence_length, "inputs2": sequence_length["inputs"]}
    return seqio.preprocessors.append_eos_after_trim(
        ds, output_features=output_features, sequence_length=sequence_length
    )


def keep_last_input_tokens(ds, sequence_length=None, output_features=None):
    """Left-truncates `inputs` to its length minus EOS: the context nearest the target survives
    (SeqIO's trim would keep the start of the file instead)."""
    del output_features
    if not sequence_length or "inputs" not in sequence_length:
        return ds
    keep = sequence_length["inputs"] - 1

    def fn(ex):
        return {**ex, "inputs": ex["inputs"][-keep:]}

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
