"""Code-search benchmarks of `codet5p eval --gin.BENCHMARK=...`: csn-<lang>, cosqa, advtest.

Each ranks every code of a base for each query and reports MRR and R@1/5/10 (×100, ties by
expected rank: `retrieval.GoldRanks`) for the model's embeddings ("contrastive"), optionally the
matching re-rank of a bimodal model ("matching", `rerank_top_k`) and the BM25 baseline ("bm25",
`rank_bm25.BM25Okapi` with its defaults k1=1.5, b=0.75, epsilon=0.25).

  csn-<lang>  UniXcoder's CodeSearchNet protocol: `path` is the test queries (JSONL with
              docstring_tokens / code_tokens, or GenBench "doc [SEP] code" lines); with
              `code_base` (UniXcoder's codebase.jsonl) queries are matched to codes by url,
              otherwise the queries' own codes are the base. Records with a `language` field
              must be <lang>.
  cosqa       CoSQA's retrieval protocol (CoCLR, the CodeT5+ script): `path` is
              cosqa-retrieval-{dev,test}-500.json, ranked against the 6,267 codes of
              code_idx_map.txt (beside it, or `code_base`); label-0 records are never positives.
  advtest     CodeXGLUE AdvTest (normalised Python function names): `path` is the raw JSONL
              (docstring_tokens / function_tokens); the test set's codes are the base.

Data paths come from `BENCHMARK_OPTIONS` (gin) or `codet5p eval --gin.BENCHMARK_OPTIONS=...`.
"""

import dataclasses
import json
import pathlib
from collections.abc import Callable

from codet5p_jax import atomic_files
from codet5p_jax.evaluation import retrieval, retrieval_sets

LANGUAGES = ("go", "java", "javascript", "php", "python", "ruby")
NAMES = ("cosqa", "advtest", *(f"csn-{lang}" for lang in LANGUAGES))


@dataclasses.dataclass(frozen=True)
class RetrievalOptions:
    """Options of a code-search benchmark (`BENCHMARK_OPTIONS`).

    Attributes:
      path: The queries file (see the module docstring).
      code_base: The code base file (cosqa: default code_idx_map.txt beside `path`).
      limit: Evaluate the first `limit` queries (the code base stays whole).
      model: Score with the checkpoint's embeddings (False: BM25 only).
      rerank_top_k: Matching re-rank of each query's top-k (bimodal checkpoints; 0 = off).
      bm25: Also report the BM25 baseline.
      text_length / code_length: Token lengths (the CodeT5+ scripts' 64 / 360).
      batch_size: Rows per embedding call.
    """

    path: str | None = None
    code_base: str | None = None
    limit: int | None = None
    model: bool = True
    rerank_top_k: int = 0
    bm25: bool = True
    text_length: int = retrieval.TEXT_LENGTH
    code_length: int = retrieval.CODE_LENGTH
    batch_size: int = 64

    def __post_init__(self):
        for name in ("limit", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"benchmark option {name} must be >= 1, got {value}")
        if self.rerank_top_k < 0:
            raise ValueError(f"rerank_top_k must be >= 0, got {self.rerank_top_k}")
        if not self.model and not self.bm25:
            raise ValueError("nothing to score: set model=True and/or bm25=True")


@dataclasses.dataclass(frozen=True)
class Retriever:
    """What the benchmarks need of a checkpoint: the network, its params and its tokenizer."""

    model: object
    params: object
    encode: Callable[[str], list[int]]


def is_retrieval_benchmark(name: str) -> bool:
    """Whether `name` is one of this module's benchmarks."""
    return name in NAMES


def make_options(**options) -> RetrievalOptions:
    """`RetrievalOptions(**options)` with a clear error for an unknown option name."""
    known = {f.name for f in dataclasses.fields(RetrievalOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown code-search benchmark option(s) {unknown}; known: {sorted(known)}"
        )
    return RetrievalOptions(**options)


def _check_language(path: str, language: str) -> None:
    """Every record with a `language` field of a JSONL file must be `language`."""
    file = pathlib.Path(path)
    if file.suffix != ".jsonl" or not file.is_file():
        return
    for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            record = json.loads(line)
            found = record.get("language") if isinstance(record, dict) else None
            if found is not None and found != language:
                raise ValueError(f"{path}:{lineno}: a {found!r} record in a csn-{language} run")


def load_set(name: str, opts: RetrievalOptions) -> retrieval_sets.RetrievalSet:
    """The benchmark's queries and code base."""
    if not is_retrieval_benchmark(name):
        raise ValueError(f"unknown code-search benchmark {name!r}; known: {', '.join(NAMES)}")
    if not opts.path:
        raise ValueError(f"benchmark {name!r} needs a data file: BENCHMARK_OPTIONS={{'path': ...}}")
    if name == "cosqa":
        return retrieval_sets.load_cosqa_retrieval(opts.path, opts.code_base, opts.limit)
    if name.startswith("csn-"):
        _check_language(opts.path, name[len("csn-") :])
    return retrieval_sets.load_retrieval_set(opts.path, opts.code_base, opts.limit)


def run(name: str, out_dir, retriever: Retriever | None = None, **options) -> dict:
    """Scores a code-search benchmark and writes `out_dir/<name>_retrieval.json`.

    Args:
      name: One of `NAMES`.
      out_dir: Output directory (created).
      retriever: The checkpoint (None: only with `model=False`, a BM25-only run).
      **options: Fields of `RetrievalOptions`.

    Returns:
      `{"contrastive"|"matching"|"bm25": {"mrr", "r@1", ...}, "num_queries", "num_candidates",
      ...}`.
    """
    opts = make_options(**options)
    rset = load_set(name, opts)
    if opts.model and retriever is None:
        raise ValueError(f"benchmark {name!r} with model=True needs a checkpoint")
    ks = rset.ks()
    use_model = retriever if opts.model else None
    metrics = retrieval.evaluate_texts(
        use_model.model if use_model else None,
        use_model.params if use_model else None,
        rset.queries,
        rset.codes,
        rset.gold,
        use_model.encode if use_model else None,
        text_length=opts.text_length,
        code_length=opts.code_length,
        batch_size=opts.batch_size,
        ks=ks,
        rerank_top_k=opts.rerank_top_k if use_model else 0,
        with_bm25=opts.bm25,
    )
    metrics.update(
        benchmark=name,
        num_queries=len(rset.queries),
        num_candidates=len(rset.codes),
        random_mrr=retrieval.random_baseline_mrr(len(rset.codes)),
        ties="expected rank over ties",
    )
    if opts.bm25:
        metrics["bm25_params"] = dict(retrieval.BM25_PARAMS)
    if rset.dropped:
        metrics["dropped_label_0"] = rset.dropped
    skipped = [k for k in retrieval.DEFAULT_KS if k not in ks]
    if skipped:
        metrics["skipped"] = f"R@{skipped}: a base of {len(rset.codes)} codes is smaller than k"
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_files.write_text(
        out / f"{name}_retrieval.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    )
    return metrics
