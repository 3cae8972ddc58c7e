"""Retrieval-augmented generation (CodeT5+ §5.7): retrieve from a vector index, then generate.

Public API (what `codet5p rag`, `gin/runs/rag.gin` and the `rag-<lang>` benchmark call):

    rag_generate(
        queries: Sequence[str],          # natural-language queries (e.g. docstrings)
        index_dir,                       # a `codet5p index` directory
        generator,                       # generator checkpoint path, or a loaded `Pretrained`
        *,
        k: int = 1,                      # neighbours per query; 0 = no retrieval (baseline)
        exclude_ids=None,                # per query: record ids never to retrieve (its gold)
        gold_codes=None,                 # per query: gold code; every record with the same
                                         #   whitespace-free sha256 is excluded too
        max_input_length: int = 512,     # encoder budget (tasks.retrieval_augmented)
        query_length: int = 128,         # query tokens kept first
        max_new_tokens: int = 128,
        method: str = "greedy",          # decoding.generate: greedy | beam | sample
        num_beams: int = 1, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
        seed: int = 0,
        batch_size: int = 8,
        retriever: Retriever | None = None,   # reuse a loaded index + embedding model
        tokenizer=None,                  # generator tokenizer dir (default: the checkpoint's)
    ) -> RagOutput(texts: list[str], retrieved_ids: list[list[int]], input_ids: list[list[int]])

Leakage guard: when evaluating on pairs whose code is in the index, pass each query's gold
(`exclude_ids` and/or `gold_codes`); the retriever drops those records and every exact duplicate
of them (same code hash, `index_records.code_hash`), searching deeper so k neighbours remain.

The encoder input format, truncation and order are `tasks.retrieval_augmented.rag_input_ids`.
`write_neighbours` runs the same retrieval offline into the JSONL the SeqIO task
(`tasks.retrieval_augmented.register_rag_task`) trains on.
"""

import dataclasses
import json
import logging
import pathlib
from collections.abc import Sequence

import numpy as np

import gin
from codet5p_jax import atomic_files
from codet5p_jax.evaluation import (
    bleu,
    completion_metrics,
    index_records,
    indexing,
    vector_index,
)

log = logging.getLogger(__name__)


class Retriever:
    """A loaded index with the embedding model that built it.

    Attributes:
      index: The `vector_index.VectorIndex`.
      pretrained / vocabulary: The embedding checkpoint and its tokenizer.
    """

    def __init__(self, index: vector_index.VectorIndex, pretrained, vocabulary):
        self.index, self.pretrained, self.vocabulary = index, pretrained, vocabulary
        self._by_hash: dict[str, list[int]] = {}
        for record in index.records:
            self._by_hash.setdefault(record["hash"], []).append(record["id"])

    @classmethod
    def open(cls, index_dir, *, model=None, tokenizer=None, embedder=None) -> "Retriever":
        """Loads `index_dir` and its embedding checkpoint (the manifest's, or `model`).

        Raises:
          FileNotFoundError: No index at `index_dir`.
          VectorIndexError: `model` is not the checkpoint the index was built with.
        """
        index = vector_index.load(index_dir)
        model = model or index.manifest["model"]["path"]
        pretrained, vocabulary = embedder or indexing.load_embedder(model, tokenizer)
        fingerprint = indexing.model_fingerprint(
            pretrained.config, pretrained.params, tokenizer or pretrained.tokenizer_dir,
            index.manifest["code_length"],
        )  # fmt: skip
        if fingerprint != index.manifest["model"]["fingerprint"]:
            raise vector_index.VectorIndexError(
                f"{model} is not the checkpoint {index_dir} was built with "
                f"({index.manifest['model']['path']}); its query vectors would not match"
            )
        return cls(index, pretrained, vocabulary)

    def excluded(self, ids=(), codes=()) -> set[int]:
        """`ids` plus every record whose code hash equals theirs or one of `codes`'."""
        hashes = {self.index.records[i]["hash"] for i in ids if 0 <= i < len(self.index.records)}
        hashes |= {index_records.code_hash(c) for c in codes}
        out = set(ids)
        for h in hashes:
            out.update(self._by_hash.get(h, ()))
        return out

    def retrieve(
        self,
        queries: Sequence[str],
        k: int,
        *,
        exclude: Sequence[set[int]] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[list[tuple[dict, float]]]:
        """Per query, up to `k` `(record, score)` best first, skipping `exclude[q]` ids."""
        vecs = indexing.embed_queries(self.pretrained, self.vocabulary, queries)
        n = len(self.index.records)
        out = []
        for q in range(len(queries)):
            banned = exclude[q] if exclude is not None else set()
            depth = min(n, k + len(banned))
            while True:
                scores, ids = self.index.search(
                    vecs[q : q + 1], max(depth, 1), nprobe=nprobe, ef_search=ef_search
                )
                hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True)
                        if i >= 0 and int(i) not in banned]  # fmt: skip
                # An approximate index can return fewer than `depth` rows; widen once to all.
                if len(hits) >= k or depth >= n:
                    break
                depth = n
            out.append([(self.index.records[i], s) for i, s in hits[:k]])
        return out


@dataclasses.dataclass(frozen=True)
class RagOutput:
    """Result of `rag_generate`.

    Attributes:
      texts: Generated text per query (first beam / sample).
      retrieved_ids: Record ids fed to the generator per query, in input order.
      input_ids: The encoder input per query (`rag_input_ids`), unpadded.
    """

    texts: list[str]
    retrieved_ids: list[list[int]]
    input_ids: list[list[int]]


def _per_query(values, n: int, name: str) -> list:
    if values is None:
        return [()] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} queries")
    return [(v,) if isinstance(v, int | str) else tuple(v) for v in values]


def rag_generate(
    queries: Sequence[str],
    index_dir,
    generator,
    *,
    k: int = 1,
    exclude_ids=None,
    gold_codes=None,
    max_input_length: int = 512,
    query_length: int = 128,
    max_new_tokens: int = 128,
    method: str = "greedy",
    num_beams: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    retriever: Retriever | None = None,
    tokenizer=None,
) -> RagOutput:
    """Retrieves `k` codes per query (leakage guard applied) and generates from query + codes.

    See the module docstring for the arguments.

    Raises:
      ValueError: `k` < 0, empty queries, per-query lists of the wrong length, a generator
        without a decoder, or a bad decoding option.
      FileNotFoundError / VectorIndexError: A missing or mismatched index.
    """
    from codet5p_jax import from_pretrained
    from tasks.retrieval_augmented import rag_input_ids
    from tasks.vocabularies import CodeT5Vocabulary

    queries = list(queries)
    if not queries or any(not str(q).strip() for q in queries):
        raise ValueError("rag_generate needs non-empty queries")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ids_ex = _per_query(exclude_ids, len(queries), "exclude_ids")
    codes_ex = _per_query(gold_codes, len(queries), "gold_codes")
    model = generator if hasattr(generator, "generate") else from_pretrained(generator)
    if not getattr(model.config, "has_decoder", False):
        raise ValueError(f"generator {generator}: a {model.config.kind!r} model cannot generate")
    vocab = CodeT5Vocabulary(tokenizer or model.tokenizer_dir)

    if k > 0:
        retriever = retriever or Retriever.open(index_dir)
        exclude = [retriever.excluded(i, c) for i, c in zip(ids_ex, codes_ex, strict=True)]
        hits = retriever.retrieve(queries, k, exclude=exclude)
    else:
        hits = [[] for _ in queries]
    inputs = [
        rag_input_ids(
            vocab.encode(q),
            [vocab.encode(record["code"]) for record, _ in row],
            max_length=max_input_length,
            query_length=query_length,
        )
        for q, row in zip(queries, hits, strict=True)
    ]
    texts = []
    width = max(len(x) for x in inputs)
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        ids = np.zeros((batch_size, width), np.int32)  # fixed shape: one compilation
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = row
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, method=method, num_beams=num_beams,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        )  # fmt: skip
        for i in range(len(chunk)):
            tokens = [int(t) for t in out.tokens[i, 0, : out.lengths[i, 0]]]
            texts.append(vocab.decode([t for t in tokens if t != vocab.eos_id]))
    return RagOutput(texts, [[r["id"] for r, _ in row] for row in hits], inputs)


def write_neighbours(
    data_path, index_dir, out_path, *, k: int = 1, exclude_gold: bool = True, retriever=None
) -> int:
    """Offline retrieval for RAG fine-tuning: one JSONL row per pair of `data_path`.

    Each row is `{"query": text, "target": code, "neighbours": [{"id", "score", "code"}]}`;
    with `exclude_gold` the pair's own code (and its exact duplicates) is never a neighbour.
    Returns the number of rows written (atomically).
    """
    records = [r for r in index_records.read_file_records(data_path) if r["text"]]
    if not records:
        raise ValueError(f"{data_path}: no records with a description to use as the query")
    retriever = retriever or Retriever.open(index_dir)
    exclude = [retriever.excluded(codes=[r["code"]]) if exclude_gold else set() for r in records]
    hits = retriever.retrieve([r["text"] for r in records], k, exclude=exclude)
    with atomic_files.atomic_file(out_path) as f:
        for record, row in zip(records, hits, strict=True):
            neighbours = [{"id": r["id"], "score": s, "code": r["code"]} for r, s in row]
            line = {"query": record["text"], "target": record["code"], "neighbours": neighbours}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(records)


def generation_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """EM (whitespace-token equality, ×100) and smoothed BLEU-4 (CodeXGLUE) of generated code."""
    em = completion_metrics.completion_scores(predictions, references)["exact_match"]
    flat = [" ".join(x.split()) for x in predictions]
    refs = [" ".join(x.split()) for x in references]
    return {"exact_match": em, "bleu": bleu.smoothed_bleu(refs, flat)}


@gin.configurable
def run_rag(
    *,
    index_dir: str = gin.REQUIRED,
    generator: str = gin.REQUIRED,
    data_path: str = gin.REQUIRED,
    output_dir: str = gin.REQUIRED,
    k: int = 1,
    exclude_gold: bool = True,
    baseline: bool = True,
    limit: int | None = None,
    max_input_length: int = 512,
    query_length: int = 128,
    max_new_tokens: int = 128,
    method: str = "greedy",
    num_beams: int = 1,
    batch_size: int = 8,
) -> dict:
    """RAG over the pairs of `data_path` (text -> code), scored with EM and BLEU-4.

    Writes `predictions.jsonl` (query, reference, generated, retrieved ids per pair; plus the
    no-retrieval generation when `baseline`) and `metrics.json` to `output_dir`, atomically.

    Args:
      index_dir / generator: As `rag_generate`.
      data_path: JSONL/JSON pairs with code and a description (CodeSearchNet format, ...).
      output_dir: Where the results go (created).
      k: Neighbours per query.
      exclude_gold: Leakage guard (the paper's setting); False only to measure leakage.
      baseline: Also generate without retrieval (k = 0) with the same generator.
      limit: Use the first `limit` pairs.
      max_input_length ... batch_size: As `rag_generate`.

    Returns:
      `{"rag": {exact_match, bleu}, "no_retrieval": {...}, "num_pairs", "k", ...}`.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    records = [r for r in index_records.read_file_records(data_path) if r["text"]][:limit]
    if not records:
        raise ValueError(f"{data_path}: no pairs with a description")
    from codet5p_jax import from_pretrained

    queries, refs = [r["text"] for r in records], [r["code"] for r in records]
    gold = refs if exclude_gold else None
    options = dict(max_input_length=max_input_length, query_length=query_length,
                   max_new_tokens=max_new_tokens, method=method, num_beams=num_beams,
                   batch_size=batch_size)  # fmt: skip
    if not hasattr(generator, "generate"):
        generator = from_pretrained(generator)
    rag = rag_generate(queries, index_dir, generator, k=k, gold_codes=gold, **options)
    metrics = {"num_pairs": len(records), "k": k, "exclude_gold": exclude_gold,
               "rag": generation_scores(rag.texts, refs)}  # fmt: skip
    plain = None
    if baseline:
        plain = rag_generate(queries, index_dir, generator, k=0, **options)
        metrics["no_retrieval"] = generation_scores(plain.texts, refs)
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_files.atomic_file(out / "predictions.jsonl") as f:
        for i in range(len(records)):
            row = {"query": queries[i], "reference": refs[i], "generated": rag.texts[i],
                   "retrieved_ids": rag.retrieved_ids[i]}  # fmt: skip
            if plain is not None:
                row["generated_no_retrieval"] = plain.texts[i]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_files.write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    log.info("rag %s: %s", data_path, metrics)
    return metrics
