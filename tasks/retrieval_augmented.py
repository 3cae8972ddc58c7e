"""Retrieval-augmented generation inputs and the SeqIO task that trains a generator on them.

CodeT5+ §5.7: the encoder retrieves, the decoder generates conditioned on the text query and the
retrieved code. The **encoder input** (token ids; the same for training and for generation) is

    <s> query[:query_length] </s> code_1[:share - 1] </s> code_2[:share - 1] </s> ... <pad>...

* the query is truncated first, to `query_length` tokens (default 128, the docstring->code task's
  input length);
* the retrieved codes follow in retrieval order (best score first; FAISS breaks score ties by
  lower id), each truncated to an equal share of what is left of `max_length` (default 512, the
  CodeT5 tokenizer's limit): `share = (max_length - len(prefix)) // k` tokens including its
  `</s>`; a neighbour whose share is under 2 tokens is dropped (then all are);
* with no neighbours (k = 0) it is `<s> query </s>`, the no-retrieval baseline's input.

Offline retrieval (`codet5p retrieve`, `codet5p_jax.evaluation.rag.write_neighbours`) writes one
JSON line per training example: `{"query", "target", "neighbours": [{"id", "score", "code"}, ...]}`
with the example's own gold code excluded. `register_rag_task(name, files, vocabulary)` then
registers a task over those files whose `inputs` are the ids above and whose `targets` are the
tokenised target + `</s>`, for `seqio.EncDecFeatureConverter` (t5x fine-tuning as usual).
"""

import functools
import json
import pathlib
from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf

import gin

DEFAULT_LENGTHS = {"inputs": 512, "targets": 420}
QUERY_LENGTH = 128
CLS_ID, SEP_ID = 1, 2  # <s>, and </s> as the separator between the parts


def rag_input_ids(
    query_ids: Sequence[int],
    neighbour_ids: Sequence[Sequence[int]],
    *,
    max_length: int = DEFAULT_LENGTHS["inputs"],
    query_length: int = QUERY_LENGTH,
) -> list[int]:
    """The encoder input of one query and its retrieved codes (see the module docstring).

    Args:
      query_ids: Token ids of the query text (no special tokens).
      neighbour_ids: Token ids of each retrieved code, best first (no special tokens).
      max_length: Total length budget, `<s>` and every `</s>` included.
      query_length: Query tokens kept before the neighbours get the rest.

    Raises:
      ValueError: A budget too small for `<s> query-token </s>`.
    """
    if query_length < 1 or max_length < 3:
        raise ValueError(f"need query_length >= 1 and max_length >= 3, got {query_length}, "
                         f"{max_length}")  # fmt: skip
    query = list(query_ids)[: min(query_length, max_length - 2)]
    out = [CLS_ID, *query, SEP_ID]
    if neighbour_ids:
        share = (max_length - len(out)) // len(neighbour_ids)
        if share >= 2:
            for ids in neighbour_ids:
                out += [*list(ids)[: share - 1], SEP_ID]
    return out


def read_neighbours(path) -> list[dict]:
    """Rows of an offline-retrieval JSONL file.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: Bad JSON, or a row without `query`, `target` or a `neighbours` list.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"retrieval file not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or not isinstance(row.get("neighbours"), list):
            raise ValueError(f"{path}:{lineno}: expected an object with a 'neighbours' list")
        for key in ("query", "target"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path}:{lineno}: no string field {key!r}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def tokenize_targets(ds: tf.data.Dataset, vocabulary) -> tf.data.Dataset:
    """Tokenises the string `targets` (`inputs` are ids already; `seqio.preprocessors.tokenize`
    would try to tokenise them too) and keeps the text as `targets_pretokenized`."""

    def fn(ex):
        ids = tf.cast(vocabulary.encode_tf(ex["targets"]), tf.int32)
        return {"inputs": ex["inputs"], "targets": ids, "targets_pretokenized": ex["targets"]}

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def register_rag_task(
    name: str,
    files: Mapping[str, str],
    vocabulary,
    *,
    k: int | None = None,
    query_length: int = QUERY_LENGTH,
    max_input_length: int = DEFAULT_LENGTHS["inputs"],
) -> str:
    """Registers a retrieval-augmented text->code task over offline-retrieval JSONL files.

    Args:
      name: Task name (e.g. `codet5p_rag_generate_python`).
      files: Split -> JSONL path (`{"train": ..., "validation": ...}`).
      vocabulary: The generator's vocabulary (`encode(str) -> ids`).
      k: Neighbours used per example (default: all in the file); 0 trains the no-retrieval
        baseline on the same examples.
      query_length / max_input_length: The input budget (`rag_input_ids`).

    Returns:
      `name`.
    """
    files = dict(files)

    def dataset_fn(split, shuffle_files=False, seed=None):
        if split not in files:
            raise ValueError(f"task {name!r} has splits {sorted(files)}, not {split!r}")
        rows = read_neighbours(files[split])

        def gen():
            for row in rows:
                neighbours = row["neighbours"] if k is None else row["neighbours"][:k]
                ids = rag_input_ids(
                    vocabulary.encode(row["query"]),
                    [vocabulary.encode(n["code"]) for n in neighbours],
                    max_length=max_input_length,
                    query_length=query_length,
                )
                yield {"inputs": ids, "targets": row["target"]}

        return tf.data.Dataset.from_generator(
            gen,
            output_signature={
                "inputs": tf.TensorSpec([None], tf.int32),
                "targets": tf.TensorSpec([], tf.string),
            },
        )

    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn, splits=tuple(files)),
        preprocessors=[
            functools.partial(tokenize_targets, vocabulary=vocabulary),
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features={
            "inputs": seqio.Feature(vocabulary, add_eos=False),
            "targets": seqio.Feature(vocabulary, add_eos=True),
        },
    )
    return name


@gin.configurable
def rag_task(
    name: str = "codet5p_rag_generate",
    train_file: str = gin.REQUIRED,
    validation_file: str | None = None,
    k: int | None = None,
    query_length: int = QUERY_LENGTH,
    max_input_length: int = DEFAULT_LENGTHS["inputs"],
) -> str:
    """`register_rag_task` for gin (`MIXTURE_OR_TASK_NAME = @tasks.rag_task()`), with the
    default CodeT5 vocabulary (`tasks.vocabularies.tokenizer_path`)."""
    from tasks.vocabularies import CodeT5Vocabulary

    files = {"train": train_file}
    if validation_file:
        files["validation"] = validation_file
    return register_rag_task(
        name, files, CodeT5Vocabulary(), k=k, query_length=query_length,
        max_input_length=max_input_length,
    )  # fmt: skip
