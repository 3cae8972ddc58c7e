"""CodeXGLUE understanding and completion benchmarks for `run_benchmark` (docs/understanding.md).

* `defect`: a Devign dir (function.json + split files); `classify_fn`; accuracy.
* `clone-bcb`: a BigCloneBench dir (data.jsonl + split files); `classify_fn` on pairs;
  precision / recall / F1.
* `clone-poj104`: a POJ-104 dir (`ProgramData/`); `embed_fn`; MAP@R.
* `completion-py150` / `completion-javacorpus`: line-level JSON (or a dir with dev.json /
  test.json); `generate_fn`; exact match and edit similarity.

`classify_fn(inputs) -> list[int]` takes strings (or pairs of strings) and `embed_fn(texts) ->
[N, E]` unit vectors; `make_classify_fn` / `make_embed_fn` build them from a model.
"""

import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from codet5p_jax.evaluation import classification_metrics, completion_metrics, retrieval
from codet5p_jax.evaluation.execution_results import EvaluationResult

# Where a predicted line ends: the data's line-break token, the end of sequence, a real newline.
COMPLETION_STOPS = ("<EOL>", "</s>", "\n")
ClassifyFn = Callable[[list], list[int]]
EmbedFn = Callable[[list[str]], np.ndarray]


def _codexglue():
    # tasks/ holds the readers; imported lazily (evaluation is importable without tasks).
    from tasks import codexglue

    return codexglue


# ------------------------------------------------------------------------------------ loading
def load_defect(opts) -> dict[str, dict]:
    """Devign examples of `opts.split` as problems {task_id, model_input, label}."""
    rows = _codexglue().read_devign(opts.required_path("defect"), opts.split)
    return {
        f"defect/{n}": {
            "task_id": f"defect/{n}",
            "idx": r["idx"],
            "model_input": r["code"],
            "label": r["label"],
        }  # fmt: skip
        for n, r in enumerate(rows)
    }


def load_bcb(opts) -> dict[str, dict]:
    """BigCloneBench pairs of `opts.split`: model_input is (code1, code2)."""
    rows = _codexglue().read_bcb(opts.required_path("clone-bcb"), opts.split)
    return {
        f"clone-bcb/{n}": {
            "task_id": f"clone-bcb/{n}",
            "idx1": r["idx1"],
            "idx2": r["idx2"],
            "model_input": (r["code1"], r["code2"]),
            "label": r["label"],
        }
        for n, r in enumerate(rows)
    }


def load_poj104(opts) -> dict[str, dict]:
    """POJ-104 programs of `opts.split` (CodeXGLUE's problem-id ranges; "all" = every folder)."""
    split = None if opts.split == "all" else opts.split
    rows = _codexglue().read_poj104(opts.required_path("clone-poj104"), split)
    return {
        f"clone-poj104/{r['index']}": {
            "task_id": f"clone-poj104/{r['index']}",
            "model_input": r["code"],
            "label": r["label"],
        }
        for r in rows
    }


def load_completion(name: str):
    """A loader of line-level completion JSON: `path` is the file, or a dir with dev/test.json."""

    def load(opts) -> dict[str, dict]:
        path = pathlib.Path(opts.required_path(name))
        if path.is_dir():
            path = path / ("dev.json" if opts.split == "validation" else "test.json")
        rows = _codexglue().read_line_completion(path)
        return {
            f"{name}/{n}": {
                "task_id": f"{name}/{n}",
                "model_prompt": r["input"],
                "reference": r["target"],
            }  # fmt: skip
            for n, r in enumerate(rows)
        }

    return load


# ---------------------------------------------------------------------------------- predicting
def predict(predictor: str, fn: Callable, problems: dict[str, dict], opts):
    """Runs `fn` over the problems in order: labels (classify) or `[N, E]` vectors (embed)."""
    inputs = [p["model_input"] for p in problems.values()]
    if predictor == "embed":
        vectors = np.asarray(fn(inputs))
        if vectors.ndim != 2 or len(vectors) != len(inputs):
            raise ValueError(
                f"embed_fn must return [{len(inputs)}, E] vectors, got {vectors.shape}"
            )
        return vectors
    labels = []
    for start in range(0, len(inputs), opts.prompts_per_call):
        chunk = inputs[start : start + opts.prompts_per_call]
        out = [int(x) for x in fn(chunk)]
        if len(out) != len(chunk):
            raise ValueError(f"classify_fn must return {len(chunk)} labels, got {len(out)}")
        labels.extend(out)
    return labels


def _rows(problems, predictions) -> list[dict]:
    return [
        {k: v for k, v in p.items() if k != "model_input"} | {"prediction": int(y)}
        for p, y in zip(problems.values(), predictions, strict=True)
    ]


# ------------------------------------------------------------------------------------ scoring
def score_defect(predictions: Sequence[int], problems: dict[str, dict], opts) -> EvaluationResult:
    """Accuracy (CodeXGLUE defect evaluator)."""
    labels = [p["label"] for p in problems.values()]
    metrics = {
        "benchmark": "defect",
        "accuracy": classification_metrics.accuracy(predictions, labels),
        "num_examples": len(labels),
        "split": opts.split,
    }
    return EvaluationResult(metrics=metrics, samples=_rows(problems, predictions), problems=[])


def score_bcb(predictions: Sequence[int], problems: dict[str, dict], opts) -> EvaluationResult:
    """Binary precision / recall / F1 of "clone" (CodeXGLUE BigCloneBench evaluator)."""
    labels = [p["label"] for p in problems.values()]
    metrics = {
        "benchmark": "clone-bcb",
        **classification_metrics.precision_recall_f1(predictions, labels),
        "accuracy": classification_metrics.accuracy(predictions, labels),
        "num_examples": len(labels),
        "split": opts.split,
    }
    return EvaluationResult(metrics=metrics, samples=_rows(problems, predictions), problems=[])


def score_poj104(vectors: np.ndarray, problems: dict[str, dict], opts) -> EvaluationResult:
    """MAP@R over the programs (CodeXGLUE POJ-104 evaluator)."""
    labels = [p["label"] for p in problems.values()]
    metrics = {
        "benchmark": "clone-poj104",
        "map_at_r": classification_metrics.map_at_r(vectors, labels),
        "num_examples": len(labels),
        "num_problems": len(set(labels)),
        "split": opts.split,
    }
    rows = [{"task_id": p["task_id"], "label": p["label"]} for p in problems.values()]
    return EvaluationResult(metrics=metrics, samples=rows, problems=[])


def postprocess_completion(text: str, opts) -> str:
    """The predicted line: the generation up to its first line break (`<EOL>`) or `</s>`."""
    del opts
    for stop in COMPLETION_STOPS:
        text = text.split(stop, 1)[0]
    return text.strip()


def score_completion(name: str):
    """A scorer of the first sample per problem: EM and edit similarity as CodeXGLUE's."""

    def score(samples, problems, opts) -> EvaluationResult:
        first = {}
        for s in samples:
            if s["task_id"] not in problems:
                raise ValueError(f"unknown task_id {s['task_id']!r}")
            first.setdefault(s["task_id"], s)
        task_ids = list(first)
        preds = [first[t]["completion"] for t in task_ids]
        refs = [problems[t]["reference"] for t in task_ids]
        rows = []
        for t, pred, ref in zip(task_ids, preds, refs, strict=True):
            p, r = (
                completion_metrics.post_process(pred.strip()),
                completion_metrics.post_process(ref),
            )
            rows.append(
                {
                    **first[t],
                    "reference": ref,
                    "exact_match": completion_metrics.exact_match(p, r),
                    "edit_sim": completion_metrics.edit_similarity(p, r),
                }  # fmt: skip
            )
        metrics = {
            "benchmark": name,
            **completion_metrics.completion_scores(preds, refs),
            "num_examples": len(task_ids),
            "split": opts.split,
        }
        return EvaluationResult(metrics=metrics, samples=rows, problems=[])

    return score


# ------------------------------------------------------------------------------ model adapters
def _pad(rows: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), np.int32)
    for i, ids in enumerate(rows):
        out[i, : len(ids)] = ids
    return out


def make_classify_fn(model, params, vocabulary, *, max_input_length: int = 512) -> ClassifyFn:
    """`classify_fn(inputs) -> labels` of a "classifier" model: argmax of its logits.

    Each text is tokenised as the SeqIO tasks do (`tasks.understanding`): ids cut to
    `max_input_length - 1`, then `</s>`; a pair model gets `[B, 2, S]`.
    """
    import jax

    cfg = model.config
    if getattr(cfg, "kind", None) != "classifier":
        raise ValueError(f"a classification benchmark needs a classifier model, got {cfg.kind!r}")
    apply = jax.jit(lambda ids: model.apply({"params": params}, ids))

    def ids(text: str) -> list[int]:
        return list(vocabulary.encode(text))[: max_input_length - 1] + [cfg.eos_token_id]

    def classify_fn(inputs: list) -> list[int]:
        if cfg.pair_input:
            pairs = [(ids(a), ids(b)) for a, b in inputs]
            width = max(len(x) for p in pairs for x in p)
            batch = np.stack([_pad(list(p), width) for p in pairs])
        else:
            rows = [ids(t) for t in inputs]
            batch = _pad(rows, max(len(r) for r in rows))
        return np.asarray(apply(batch)).argmax(-1).tolist()

    return classify_fn


def make_embed_fn(model, params, vocabulary, *, max_input_length: int = 512, batch_size: int = 32):
    """`embed_fn(texts) -> [N, E]` unit vectors of a model with an embedding head (`<s> ..
    </s>`)."""
    if not getattr(model.config, "embed_dim", None):
        raise ValueError(f"clone-poj104 needs an embedding model, got {model.config.kind!r}")
    embed = retrieval.make_embed_fn(model, params)

    def embed_fn(texts: list[str]) -> np.ndarray:
        token_ids = retrieval.to_token_ids(texts, vocabulary.encode, max_input_length)
        return retrieval.embed_in_batches(embed, token_ids, batch_size)

    return embed_fn
