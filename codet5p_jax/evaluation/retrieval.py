"""Text-to-code retrieval: embedding ranking, matching re-rank, BM25 baseline, MRR and R@k.

Mirrors the released CodeT5+ retrieval scripts (FACTS §1.6, `CodeT5+/code_retrieval/`): queries
and code are tokenised as `<s> ... </s>` (text 64 / code 360 tokens), embedded from the first
token's state (`normalize(proj(h[:, 0]))`), ranked by cosine similarity; MRR and R@1/5/10 are
reported ×100. The matching re-rank scores each query's top-k codes with the decoder: the code's
first token is overwritten with `[ENC]` (32100), the decoder cross-attends to the text encoding,
and `score = itm_head(state at the last </s>)[1] + similarity`. Codes outside the top-k keep
their contrastive order below the re-ranked ones (the script fills them with -100, which puts a
gold outside the top-k at rank k+1 whatever its similarity).

Ties: a gold candidate that ties with others is scored by its expected rank under a uniformly
random order of the tie (`GoldRanks`): MRR averages 1/r over the tie's positions and R@k is the
probability of landing in the top k. Counting only strictly higher scores (rank 1 for a BM25
query that shares no token with any code) would favour the gold; the released scripts' `argsort`
breaks ties by position, which is arbitrary.

Data: CodeSearchNet-style JSONL (UniXcoder's recipe: `' '.join(docstring_tokens)` /
`' '.join(code_tokens)`, which leaves the docstring out of the code), plain `{"text", "code"}`
records (the bundled stdlib pairs), GenBench `{"input": "doc [SEP] code"}` lines and CoSQA-style
`{"doc", "code", "label"}` JSON lists, where only label-1 pairs are gold pairs (label 0 means the
code does not answer the query) and records without a label (CodeXGLUE's `test_webquery.json`,
whose answers are kept elsewhere) are refused. The CoSQA retrieval protocol (500 queries against
a 6,267-code base) is `retrieval_sets.load_cosqa_retrieval`.
"""

import dataclasses
import json
import pathlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from codet5p_jax.config import STAGE2_ADDED_TOKENS

TEXT_LENGTH = 64  # --max_text_len of the CodeT5+ retrieval scripts
CODE_LENGTH = 360  # --max_code_len
DEFAULT_KS = (1, 5, 10)

# (text field, code field, joiner) in order of preference.
_FIELD_PAIRS = (
    ("doc", "code", None),  # CoSQA: `doc` is the web query (its docstring_tokens are not)
    ("docstring_tokens", "code_tokens", " "),
    ("text", "code", None),
    ("nl", "code", None),
    ("docstring", "code", None),
    ("docstring_tokens", "function_tokens", " "),
)


@dataclasses.dataclass(frozen=True)
class Pair:
    """One natural-language description and its code."""

    text: str
    code: str


def record_to_pair(record: dict, where: str) -> Pair | None:
    """The record's pair; None for a CoSQA label-0 record (a negative, never a gold pair)."""
    if "doc" in record and "code" in record:  # CoSQA / WebQueryTest family
        if "label" not in record:
            raise ValueError(
                f"{where}: a CoSQA/WebQuery record without 'label' (e.g. test_webquery.json, "
                "whose answers are not in the file): it is not a gold pair"
            )
        if int(record["label"]) != 1:
            return None
    if "input" in record and " [SEP] " in str(record["input"]):  # GenBench MRR format
        text, code = str(record["input"]).split(" [SEP] ", 1)
        return Pair(text.strip(), code.strip())
    for text_key, code_key, joiner in _FIELD_PAIRS:
        if text_key in record and code_key in record:
            text, code = record[text_key], record[code_key]
            if joiner is not None:
                text, code = (joiner.join(x) if isinstance(x, list) else x for x in (text, code))
            return Pair(str(text).strip(), str(code).strip())
    raise ValueError(
        f"{where}: no text/code fields; expected one of "
        f"{[(t, c) for t, c, _ in _FIELD_PAIRS]} or a GenBench 'input' with ' [SEP] ', "
        f"got keys {sorted(record)}"
    )


def load_pairs(path, *, on_empty: str = "error", limit: int | None = None) -> list[Pair]:
    """Reads text-code pairs from a JSONL file or a JSON list (CoSQA label-0 records dropped).

    Args:
      path: `.jsonl` (one record per line) or `.json` (a list of records).
      on_empty: "error" raises on a pair whose text or code is empty; "skip" drops it (the
        number dropped is in the returned list's length only, so callers print it).
      limit: Keep only the first `limit` pairs.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: Malformed JSON, unknown fields, no pairs, or an empty side with "error".
    """
    if on_empty not in ("error", "skip"):
        raise ValueError(f"on_empty must be 'error' or 'skip', got {on_empty!r}")
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Retrieval data file not found: {path}")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(items).__name__}")
        records = [(f"{path}[{i}]", r) for i, r in enumerate(items)]
    else:
        records = []
        for lineno, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    pairs = []
    for where, record in records:
        pair = record_to_pair(record, where)
        if pair is None:  # a labelled negative
            continue
        if not pair.text or not pair.code:
            side = "text" if not pair.text else "code"
            if on_empty == "error":
                raise ValueError(f"{where}: empty {side}; pass on_empty='skip' to drop such pairs")
            continue
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise ValueError(f"{path}: no usable text-code pairs")
    return pairs


def load_corpus_pairs(name: str = "stdlib", split: str = "validation", **spec) -> list[Pair]:
    """(docstring, code) pairs of a prepared corpus split (`tasks.corpus_cache`).

    The bundled corpus is `name="stdlib"`; its `validation` split (files hashed out of
    training, so no function of a held-out file was trained on) is the held-out retrieval set.
    Extra keyword arguments build the `CorpusSpec` (`kind`, `path`, ...) for other corpora.
    """
    import tensorflow as tf

    from tasks.corpus_cache import CorpusSpec, corpus_files

    spec = CorpusSpec(name=name, kind=spec.pop("kind", "stdlib" if name == "stdlib" else "pairs"),
                      **spec)  # fmt: skip
    features = {k: tf.io.FixedLenFeature([], tf.string) for k in ("code", "docstring")}
    pairs = []
    for record in tf.data.TFRecordDataset(corpus_files(spec, "pairs", split)):
        ex = tf.io.parse_single_example(record, features)
        text, code = (ex[k].numpy().decode("utf-8").strip() for k in ("docstring", "code"))
        if text and code:  # the corpus builder already drops empty sides; keep the guarantee
            pairs.append(Pair(text, code))
    return pairs


def is_corpus_name(data: str) -> bool:
    """Whether `data` names a prepared corpus split (`stdlib:validation`) rather than a file.

    A path-like string (`/`, a `.json`/`.jsonl`/`.txt` suffix) is a file even when it has a
    ':' in it, so a missing file is reported as a missing file.
    """
    if ":" not in data or pathlib.Path(data).exists():
        return False
    name, _ = data.split(":", 1)
    return (
        "/" not in data
        and pathlib.PurePath(name).suffix == ""
        and not data.endswith((".json", ".jsonl", ".txt"))
    )


def load_eval_pairs(data: str, *, on_empty: str = "error", limit: int | None = None) -> list[Pair]:
    """Pairs from `corpus:split` (e.g. `stdlib:validation`) or a JSON/JSONL file path."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if is_corpus_name(data):
        name, split = data.split(":", 1)
        return load_corpus_pairs(name, split)[:limit]
    return load_pairs(data, on_empty=on_empty, limit=limit)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GoldRanks:
    """Where each query's gold candidate lands, as the range of ranks its tie spans.

    Attributes:
      best: `[Q]` 1 + the number of candidates scored strictly higher than the gold.
      worst: `[Q]` `best` + the number of other candidates scored exactly as the gold.
    """

    best: np.ndarray
    worst: np.ndarray

    @property
    def expected(self) -> np.ndarray:
        """`[Q]` expected rank under a uniformly random order of each tie."""
        return (self.best + self.worst) / 2.0

    def reciprocal(self) -> np.ndarray:
        """`[Q]` expected 1/rank over the tie's positions: mean of 1/r for r in best..worst."""
        best, worst = np.asarray(self.best, np.int64), np.asarray(self.worst, np.int64)
        harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, int(worst.max()) + 1))])
        return (harmonic[worst] - harmonic[best - 1]) / (worst - best + 1)

    def hit_rate(self, k: int) -> np.ndarray:
        """`[Q]` probability that the gold lands in the top `k` (fraction of the tie within k)."""
        span = self.worst - self.best + 1
        return np.clip(k - self.best + 1, 0, span) / span


def gold_ranks(scores, gold=None) -> GoldRanks:
    """The rank range of each query's gold candidate (ties resolved by expectation, see module).

    Args:
      scores: `[Q, N]` query-by-candidate scores (higher is better). Compared as float64, so
        pass scores in the precision they were computed in: a cast to float32 can create ties.
      gold: `[Q]` gold candidate indices; default `arange(Q)` (pair i's code is candidate i).
    """
    scores = np.asarray(scores, np.float64)
    gold = np.arange(scores.shape[0]) if gold is None else np.asarray(gold)
    gold_scores = scores[np.arange(scores.shape[0]), gold][:, None]
    higher = np.sum(scores > gold_scores, axis=1)
    tied = np.sum(scores == gold_scores, axis=1) - 1  # the gold itself is not a tie
    return GoldRanks(best=1 + higher, worst=1 + higher + tied)


def metrics_from_ranks(ranks: GoldRanks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """MRR and R@k, ×100, of `ranks` (expected values over ties)."""
    metrics = {"mrr": 100.0 * float(np.mean(ranks.reciprocal()))}
    for k in ks:
        metrics[f"r@{k}"] = 100.0 * float(np.mean(ranks.hit_rate(k)))
    return metrics


def retrieval_metrics(scores, gold=None, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """MRR and R@k, ×100 like the CodeT5+ scripts (ties by expectation).

    Raises:
      ValueError: Some `k` exceeds the corpus size (R@k would be trivially 100); evaluate with
        smaller `ks` (e.g. `ks=(1,)`) on such a corpus.
    """
    scores = np.asarray(scores)
    num_candidates = scores.shape[1]
    too_big = [k for k in ks if k > num_candidates]
    if too_big:
        raise ValueError(
            f"R@{too_big} asked for a corpus of only {num_candidates} candidates; "
            f"pass ks with every k <= {num_candidates}"
        )
    return metrics_from_ranks(gold_ranks(scores, gold), ks)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def embed_in_batches(embed_fn: Callable, token_ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Applies `embed_fn([b, L] ids) -> [b, E]` over `token_ids` in fixed-size batches.

    The last batch is padded with pad rows (id 0) so every call has the same shape (one
    compilation), and the padding rows are dropped from the result.
    """
    n = token_ids.shape[0]
    out = []
    for start in range(0, n, batch_size):
        chunk = token_ids[start : start + batch_size]
        real = chunk.shape[0]
        if real < batch_size:
            chunk = np.concatenate(
                [chunk, np.zeros((batch_size - real,) + chunk.shape[1:], chunk.dtype)]
            )
        out.append(np.asarray(embed_fn(chunk))[:real])
    return np.concatenate(out).astype(np.float32)


def cosine_scores(query_vecs, code_vecs) -> np.ndarray:
    """[Q, E] x [N, E] -> [Q, N]; the vectors are unit norm, so the dot product is the cosine."""
    return np.asarray(query_vecs, np.float32) @ np.asarray(code_vecs, np.float32).T


def matching_rerank(
    match_fn: Callable,
    text_ids: np.ndarray,
    code_ids: np.ndarray,
    scores: np.ndarray,
    top_k: int,
    enc_id: int = STAGE2_ADDED_TOKENS["[ENC]"],
) -> np.ndarray:
    """Re-scores each query's `top_k` codes with the matching head (eval_match_retrieval.py).

    Args:
      match_fn: `(text_ids [k, Lt], decoder_code_ids [k, Lc]) -> [k]` positive-class logits.
      text_ids / code_ids: Token ids of queries `[Q, Lt]` and corpus `[N, Lc]`.
      scores: `[Q, N]` contrastive similarities.
      top_k: Candidates re-ranked per query (script default 256, run script 32).
      enc_id: `[ENC]`, written over each code's first token.

    Returns:
      `[Q, N]` float64: itm logit + similarity on the top-k; elsewhere the similarity shifted
      below the lowest re-ranked score, so the codes outside the top-k keep their contrastive
      order (and their ties) after every re-ranked code.
    """
    scores = np.asarray(scores, np.float64)
    top_k = min(top_k, scores.shape[1])
    dec_ids = np.array(code_ids, copy=True)
    dec_ids[:, 0] = enc_id
    out = np.array(scores, copy=True)
    rest = np.ones(scores.shape[1], bool)
    for q in range(scores.shape[0]):
        top = np.argsort(-scores[q], kind="stable")[:top_k]
        texts = np.repeat(text_ids[q : q + 1], top_k, axis=0)
        out[q, top] = np.asarray(match_fn(texts, dec_ids[top]), np.float64) + scores[q, top]
        rest[:] = True
        rest[top] = False
        if rest.any():
            out[q, rest] += out[q, top].min() - scores[q, rest].max() - 1.0
    return out


_WORD = re.compile(r"[A-Za-z]+|\d+")
_CAMEL = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words, with snake_case and camelCase identifiers split into parts."""
    words = []
    for word in _WORD.findall(text):
        words.extend(part.lower() for part in _CAMEL.findall(word))
    return words


BM25_PARAMS = {"k1": 1.5, "b": 0.75, "epsilon": 0.25}  # rank_bm25 0.2.2 BM25Okapi defaults


def bm25_scores(queries: Sequence[str], corpus: Sequence[str]) -> np.ndarray:
    """[Q, N] float64 Okapi BM25 scores of each query vs the code (`rank_bm25.BM25Okapi`).

    `BM25_PARAMS` (the library's defaults: k1=1.5, b=0.75, idf floor epsilon=0.25 of the mean
    idf) over `bm25_tokens`; an empty code is indexed as one placeholder token. Kept in float64:
    a float32 cast would tie nearby scores.
    """
    from rank_bm25 import BM25Okapi

    index = BM25Okapi([bm25_tokens(c) or ["<empty>"] for c in corpus], **BM25_PARAMS)
    return np.stack([index.get_scores(bm25_tokens(q)) for q in queries]).astype(np.float64)


def random_baseline_mrr(num_candidates: int) -> float:
    """Expected MRR ×100 of a uniformly random ranking: H(N) / N."""
    return 100.0 * sum(1.0 / r for r in range(1, num_candidates + 1)) / num_candidates


def check_corpus(pairs: Sequence[Pair], ks: Sequence[int]) -> None:
    """Raises a clear error before any encoding when the corpus cannot support R@max(ks)."""
    if len(pairs) < max(ks, default=1):
        raise ValueError(f"Corpus of {len(pairs)} pairs is smaller than k={max(ks)} for R@k.")


# ---------------------------------------------------------------------------------------------
# Tokens and a JAX model
# ---------------------------------------------------------------------------------------------
def to_token_ids(
    texts: Sequence[str], encode: Callable[[str], list[int]], max_length: int
) -> np.ndarray:
    """`<s> ids </s>` padded with 0 to `[N, max_length]` (RoBERTa-style truncation).

    Args:
      texts: Strings to tokenise.
      encode: `str -> list[int]` without special tokens (e.g. a `tokenizers` BPE's
        `lambda s: tok.encode(s).ids`).
      max_length: Total length including `<s>` (1) and `</s>` (2).
    """
    if max_length < 3:
        raise ValueError(f"max_length must leave room for <s>, a token and </s>, got {max_length}")
    out = np.zeros((len(texts), max_length), np.int32)
    for i, text in enumerate(texts):
        ids = [1] + list(encode(text))[: max_length - 2] + [2]
        out[i, : len(ids)] = ids
    return out


def make_embed_fn(model, params) -> Callable:
    """Jitted `[b, L] ids -> [b, E]` unit vectors (`model.embed`, first-token pooling)."""
    import jax

    return jax.jit(lambda ids: model.apply({"params": params}, ids, method=model.embed))


def make_match_fn(model, params) -> Callable:
    """Jitted `(text ids, decoder code ids) -> [b]` positive matching logits (bimodal model)."""
    import jax
    import jax.numpy as jnp

    from codet5p_jax.objectives.contrastive import last_token_index

    def match(text_ids, dec_ids):
        variables = {"params": params}
        text_mask = text_ids != 0
        encoded = model.apply(variables, text_ids, text_mask, method=model.encode)
        hidden = model.apply(
            variables,
            encoded,
            text_mask,
            dec_ids,
            decoder_mask=dec_ids != 0,
            return_hidden=True,
            method=model.decode,
        )
        eos = last_token_index(dec_ids, model.config.eos_token_id)
        states = jnp.take_along_axis(hidden, eos[:, None, None], axis=1)[:, 0]
        return model.apply(variables, states, method=model.itm_logits)[:, 1]

    return jax.jit(match)


def load_model(path):
    """`(model, params, tokenizer_dir)` of an HF / orbax directory or a training MODEL_DIR.

    A MODEL_DIR (with `checkpoints/`) gives its latest step's params, without the training-only
    leaves (the stage-2 temperature) the network does not take.
    """
    import jax

    from codet5p_jax import families, loading

    ckpt = loading.load(path)
    dtype = np.dtype(ckpt.config.param_dtype)  # released fp16 weights run in the model's dtype
    params = jax.tree.map(lambda x: np.asarray(x, dtype), ckpt.params)
    return families.build_model(ckpt.config), params, ckpt.tokenizer_dir


def evaluate_pairs(model, params, pairs: Sequence[Pair], encode, **options):
    """Text->code retrieval over `pairs` (query i's gold code is code i); see `evaluate_texts`."""
    check_corpus(pairs, options.get("ks", DEFAULT_KS))
    return evaluate_texts(
        model, params, [p.text for p in pairs], [p.code for p in pairs], None, encode, **options
    )


def evaluate_texts(
    model,
    params,
    queries: Sequence[str],
    codes: Sequence[str],
    gold,
    encode: Callable[[str], list[int]] | None,
    *,
    text_length: int = TEXT_LENGTH,
    code_length: int = CODE_LENGTH,
    batch_size: int = 64,
    ks: Sequence[int] = DEFAULT_KS,
    rerank_top_k: int = 0,
    with_bm25: bool = False,
) -> dict[str, dict[str, float]]:
    """Ranks all `codes` for each query; query q's gold is `codes[gold[q]]`.

    Args:
      model / params: An embedding-capable model and its params; None with `encode=None`
        for a BM25-only run.
      gold: `[Q]` indices into `codes`; None means `arange(Q)`.

    Returns:
      `{"contrastive": metrics}` (when a model is given) plus `"matching"` when
      `rerank_top_k > 0` (bimodal models) and `"bm25"` when `with_bm25`; each metrics dict has
      `mrr` and `r@k`, ×100.
    """
    results = {}
    if model is not None:
        text_ids = to_token_ids(queries, encode, text_length)
        code_ids = to_token_ids(codes, encode, code_length)
        embed = make_embed_fn(model, params)
        scores = cosine_scores(
            embed_in_batches(embed, text_ids, batch_size),
            embed_in_batches(embed, code_ids, batch_size),
        )
        results["contrastive"] = retrieval_metrics(scores, gold, ks=ks)
        if rerank_top_k:
            if not model.config.has_itm_head:
                raise ValueError(
                    f"Matching re-rank needs a bimodal model, got {model.config.kind!r}"
                )
            reranked = matching_rerank(
                make_match_fn(model, params), text_ids, code_ids, scores, rerank_top_k
            )
            results["matching"] = retrieval_metrics(reranked, gold, ks=ks)
    if with_bm25:
        results["bm25"] = retrieval_metrics(bm25_scores(queries, codes), gold, ks=ks)
    return results
