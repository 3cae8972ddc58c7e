"""`rag-<lang>` benchmarks: retrieval-augmented text-to-code generation: EM, BLEU-4, CodeBLEU.

For each CodeSearchNet-format record of `path` (`docstring_tokens` → the query, `code_tokens`
→ the reference, both joined with spaces), `codet5p_jax.evaluation.rag.rag_generate` retrieves
`k` codes from the index at `index` (the record's own code and its exact duplicates excluded:
the paper's leakage guard) and generates with the checkpoint being evaluated. Scores
(`codegen_metrics`): exact match, corpus BLEU-4 and CodeBLEU (the `codebleu` package with the
benchmark's language, its four components beside it) ×100; with `baseline=True` the same
generator without retrieval (k = 0) is scored beside it.
"""

import dataclasses
import importlib
import json
import pathlib

from codet5p_jax import atomic_files
from codet5p_jax.evaluation import codegen_metrics, results_io

LANGUAGES = ("go", "java", "javascript", "php", "python", "ruby")
NAMES = tuple(f"rag-{lang}" for lang in LANGUAGES)
RAG_MODULE = "codet5p_jax.evaluation.rag"  # the retriever + generator (rag_generate)


@dataclasses.dataclass(frozen=True)
class RagOptions:
    """Options of a `rag-<lang>` benchmark (`BENCHMARK_OPTIONS`).

    Attributes:
      path: CodeSearchNet-format JSONL (docstring_tokens, code_tokens).
      index: A `codet5p index` directory to retrieve from.
      k: Retrieved codes per query (>= 1).
      baseline: Also generate without retrieval (k = 0) and report it as "no_retrieval".
      exclude_gold: Drop each query's own code (and exact duplicates) from its neighbours.
      codebleu: Also score CodeBLEU (needs the `codebleu` package; checked before generating).
      limit: Use the first `limit` records.
      max_input_length / query_length / max_new_tokens / method / num_beams / batch_size:
        passed to `rag_generate`.
    """

    path: str | None = None
    index: str | None = None
    k: int = 1
    baseline: bool = True
    exclude_gold: bool = True
    codebleu: bool = True
    limit: int | None = None
    max_input_length: int = 512
    query_length: int = 128
    max_new_tokens: int = 128
    method: str = "greedy"
    num_beams: int = 1
    batch_size: int = 8

    def __post_init__(self):
        for name in ("k", "limit", "max_new_tokens", "num_beams", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"benchmark option {name} must be >= 1, got {value}")


def is_rag_benchmark(name: str) -> bool:
    """Whether `name` is a `rag-<lang>` benchmark."""
    return name in NAMES


def make_options(**options) -> RagOptions:
    """`RagOptions(**options)` with a clear error for an unknown option name."""
    known = {f.name for f in dataclasses.fields(RagOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown rag benchmark option(s) {unknown}; known: {sorted(known)}")
    return RagOptions(**options)


def load_records(name: str, opts: RagOptions) -> tuple[list[str], list[str]]:
    """`(queries, reference codes)` of the benchmark's JSONL (language checked)."""
    language = name[len("rag-") :]
    for field, value in (("path", opts.path), ("index", opts.index)):
        if not value:
            raise ValueError(f"benchmark {name!r} needs BENCHMARK_OPTIONS={{'{field}': ...}}")
    if not pathlib.Path(opts.path).is_file():
        raise FileNotFoundError(f"rag data file not found: {opts.path}")
    queries, codes = [], []
    for line, record in results_io.read_jsonl(opts.path):
        for field in ("docstring_tokens", "code_tokens"):
            if not isinstance(record.get(field), list) or not record[field]:
                raise ValueError(f"{opts.path}, line {line}: missing list field {field!r}")
        found = record.get("language")
        if found is not None and found != language:
            raise ValueError(f"{opts.path}, line {line}: a {found!r} record in a {name} run")
        queries.append(" ".join(record["docstring_tokens"]))
        codes.append(" ".join(record["code_tokens"]))
        if opts.limit is not None and len(queries) >= opts.limit:
            break
    if not queries:
        raise ValueError(f"{opts.path}: no records")
    return queries, codes


def _scores(references, predictions, language: str | None) -> dict:
    """EM and BLEU-4, and CodeBLEU (`codebleu`, `codebleu_<component>`) when `language` is set."""
    scores = {
        "exact_match": codegen_metrics.exact_match(references, predictions),
        "bleu": codegen_metrics.corpus_bleu(references, predictions),
    }
    if language is not None:
        parts = codegen_metrics.codebleu(references, predictions, language)
        scores["codebleu"] = parts.pop("codebleu")
        scores.update({f"codebleu_{key}": value for key, value in parts.items()})
    return scores


def run(name: str, out_dir, generator, **options) -> dict:
    """Generates with retrieval (and without, for the baseline), scores, writes files.

    Args:
      name: `rag-<lang>`.
      out_dir: Output directory: `<name>_predictions.jsonl` and `<name>_rag.json`.
      generator: A `Pretrained` or a checkpoint path (passed to `rag_generate`).
      **options: Fields of `RagOptions`.

    Raises:
      ValueError: Unknown option, missing path/index, malformed records, or no RAG module.
    """
    opts = make_options(**options)
    queries, references = load_records(name, opts)
    language = name[len("rag-") :] if opts.codebleu else None
    if language is not None:  # fail before generating, not after
        codegen_metrics.codebleu([references[0]], [references[0]], language)
    try:
        rag = importlib.import_module(RAG_MODULE)
    except ModuleNotFoundError as e:
        raise ValueError(f"{name} needs {RAG_MODULE} (rag_generate), not installed here") from e
    common = dict(
        max_input_length=opts.max_input_length,
        query_length=opts.query_length,
        max_new_tokens=opts.max_new_tokens,
        method=opts.method,
        num_beams=opts.num_beams,
        batch_size=opts.batch_size,
    )
    gold = references if opts.exclude_gold else None
    out = rag.rag_generate(queries, opts.index, generator, k=opts.k, gold_codes=gold, **common)
    metrics = {"benchmark": name, "num_examples": len(queries), "k": opts.k}
    metrics["rag"] = _scores(references, out.texts, language)
    rows = [
        {"query": q, "reference": r, "prediction": p, "retrieved_ids": list(ids)}
        for q, r, p, ids in zip(queries, references, out.texts, out.retrieved_ids, strict=True)
    ]
    if opts.baseline:
        plain = rag.rag_generate(queries, opts.index, generator, k=0, **common)
        metrics["no_retrieval"] = _scores(references, plain.texts, language)
        for row, text in zip(rows, plain.texts, strict=True):
            row["prediction_no_retrieval"] = text
    out_path = pathlib.Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    results_io.write_jsonl(out_path / f"{name}_predictions.jsonl", rows)
    atomic_files.write_text(
        out_path / f"{name}_rag.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    )
    return metrics
