"""One call registers every task and mixture over a corpus; the stdlib set is the default.

Names for a corpus `<c>` (the bundled one is `stdlib`):

| name | kind | default lengths |
|---|---|---|
| `codet5p_stage1_<c>_span_denoise` | task | inputs 512, targets 114 |
| `codet5p_stage1_<c>_seq2seq_clm` | task | 768 / 600 |
| `codet5p_stage1_<c>_decoder_clm` | task | 1 / 1024 |
| `codet5p_stage1_denoise_<c>` | mixture (warm-up: span denoising only) | 512 / 114 |
| `codet5p_stage1_<c>` | mixture (the three objectives, equal rates) | 768 / 1024 |
| `codet5p_stage2_<c>_bimodal` | task | text 128, code 420 |
| `codet5p_stage2_<c>` | mixture (the bimodal task) | text 128, code 420 |
| `codet5p_summarize_<c>` / `codet5p_generate_<c>` | tasks | 320/128, 128/420 |

Stage-1 batches come from `Stage1FeatureConverter`, stage-2 batches from
`BimodalFeatureConverter`, the rest from `seqio.EncDecFeatureConverter`.
"""

import logging

import seqio

import gin
from tasks import downstream, stage1, stage2
from tasks.corpus_cache import CorpusSpec
from tasks.vocabularies import CodeT5Vocabulary

# Default task feature lengths of every registered name pattern (see the table above).
DEFAULT_LENGTHS = {
    "span_denoise": stage1.DEFAULT_LENGTHS["span_denoise"],
    "seq2seq_clm": stage1.DEFAULT_LENGTHS["seq2seq_clm"],
    "decoder_clm": stage1.DEFAULT_LENGTHS["decoder_clm"],
    "stage1_denoise": stage1.DEFAULT_LENGTHS["span_denoise"],
    "stage1": stage1.JOINT_LENGTHS,
    "stage2": stage2.DEFAULT_LENGTHS,
    "summarize": downstream.SUMMARIZE_LENGTHS,
    "generate": downstream.GENERATE_LENGTHS,
}
_REGISTERED: dict[str, tuple] = {}


def corpus_names(name: str) -> dict[str, str]:
    """Task and mixture names registered for corpus `name`, keyed like `DEFAULT_LENGTHS`."""
    return {
        "span_denoise": f"codet5p_stage1_{name}_span_denoise",
        "seq2seq_clm": f"codet5p_stage1_{name}_seq2seq_clm",
        "decoder_clm": f"codet5p_stage1_{name}_decoder_clm",
        "stage1_denoise": f"codet5p_stage1_denoise_{name}",
        "stage1": f"codet5p_stage1_{name}",
        "stage2_bimodal": f"codet5p_stage2_{name}_bimodal",
        "stage2": f"codet5p_stage2_{name}",
        "summarize": f"codet5p_summarize_{name}",
        "generate": f"codet5p_generate_{name}",
    }


def feature_converter_for(key: str):
    """The feature converter class for a `corpus_names` key."""
    if key in ("span_denoise", "seq2seq_clm", "decoder_clm", "stage1_denoise", "stage1"):
        return stage1.Stage1FeatureConverter
    if key in ("stage2", "stage2_bimodal"):
        return stage2.BimodalFeatureConverter
    return seqio.EncDecFeatureConverter


@gin.configurable(denylist=["vocabulary"])
def register_corpus(
    name: str,
    path: str | None = None,
    kind: str = "directory",
    *,
    vocabulary: CodeT5Vocabulary | str | None = None,
    max_files: int | None = None,
    validation_fraction: float = 0.05,
    num_shards: int = 1,
    min_file_tokens: int | None = 50,
    max_file_tokens: int | None = 2000,
    stage1_lengths: dict | None = None,
    stage2_lengths: dict | None = None,
    pretokenize: bool = True,
    overwrite: bool = False,
) -> dict[str, str]:
    """Registers all stage-1, stage-2 and downstream tasks and mixtures over one corpus.

    Nothing is read until a dataset is requested; then the corpus is prepared once into the
    cache (`tasks.corpus_cache`). Registering the same spec again is a no-op.

    Args:
      name: Corpus name used in task names (`[a-z0-9_]+`).
      path: Source tree, JSONL file or directory of JSONL files.
      kind: `directory`, `jsonl` (field `code`), `pairs` (CodeSearchNet-style) or `stdlib`.
      vocabulary: A `CodeT5Vocabulary`, a tokenizer path, or None for the default rule
        (`tasks.vocabularies.tokenizer_path`).
      max_files: Cap on files / records read (quick runs).
      validation_fraction: Share of files in the validation split (by path hash).
      num_shards: TFRecord shards per split (>= hosts for file-level host sharding).
      min_file_tokens: Stage-1 file-size filter, lower bound (paper: 50).
      max_file_tokens: Upper bound (paper: 2,000).
      stage1_lengths: Override `stage1.DEFAULT_LENGTHS` (per objective inputs/targets).
      stage2_lengths: Override `stage2.DEFAULT_LENGTHS` (text_tokens / code_tokens).
      pretokenize: Stage 1 reads the code tokenized once and cached (`tasks.token_cache`);
        False tokenizes inside tf.data on every epoch (same examples, slower).
      overwrite: Replace tasks already registered under these names with another spec.

    Returns:
      `corpus_names(name)`: the registered task and mixture names.
    """
    spec = CorpusSpec(
        name=name,
        kind=kind,
        path=None if path is None else str(path),
        max_files=max_files,
        validation_fraction=validation_fraction,
        num_shards=num_shards,
    )
    if vocabulary is None or isinstance(vocabulary, str):
        vocabulary = CodeT5Vocabulary(vocabulary)
    key = (spec, vocabulary, min_file_tokens, max_file_tokens, repr(stage1_lengths),
           repr(stage2_lengths), pretokenize)  # fmt: skip
    names = corpus_names(name)
    if _REGISTERED.get(name) == key:
        return names
    if name in _REGISTERED or any(n in seqio.TaskRegistry.names() for n in names.values()):
        if not overwrite:
            raise ValueError(f"corpus {name!r} is already registered differently; overwrite=True")
        for n in names.values():
            seqio.TaskRegistry.remove(n)
            seqio.MixtureRegistry.remove(n)
    s1 = stage1.register_stage1_tasks(
        spec,
        vocabulary,
        stage1_lengths or stage1.DEFAULT_LENGTHS,
        min_file_tokens,
        max_file_tokens,
        pretokenize=pretokenize,
    )
    seqio.MixtureRegistry.add(names["stage1_denoise"], [(s1["span_denoise"], 1.0)])
    seqio.MixtureRegistry.add(names["stage1"], [(t, 1.0) for t in s1.values()])
    stage2.register_stage2_task(spec, vocabulary, stage2_lengths or stage2.DEFAULT_LENGTHS)
    seqio.MixtureRegistry.add(names["stage2"], [(names["stage2_bimodal"], 1.0)])
    downstream.register_pair_tasks(spec, vocabulary)
    _REGISTERED[name] = key
    logging.info("registered corpus %s (%s): %s", name, kind, sorted(names.values()))
    return names


@gin.configurable
def corpus_mixture(name: str = gin.REQUIRED, stage: str = "stage1", **kwargs) -> str:
    """Registers a corpus (as `register_corpus`) and returns one of its names, for gin.

    Example: `MIXTURE_OR_TASK_NAME = @tasks.corpus_mixture()` with
    `tasks.corpus_mixture.name = "mycode"`, `.path = "/data/src"`, `.stage = "stage1"`.
    """
    return register_corpus(name, **kwargs)[stage]


def register_defaults() -> None:
    """Registers the bundled stdlib tasks/mixtures and HumanEval (at `import tasks`)."""
    vocab = CodeT5Vocabulary()
    register_corpus("stdlib", kind="stdlib", vocabulary=vocab)
    if "codet5p_humaneval" not in seqio.TaskRegistry.names():
        downstream.register_humaneval(vocab)


def registered_spec(name: str) -> CorpusSpec | None:
    """The `CorpusSpec` registered under corpus `name` (None if none is), for readers of its
    prepared records (`codet5p index --corpus NAME`)."""
    key = _REGISTERED.get(name)
    return None if key is None else key[0]


def registered_corpora() -> list[str]:
    """Names of the registered corpora."""
    return sorted(_REGISTERED)
