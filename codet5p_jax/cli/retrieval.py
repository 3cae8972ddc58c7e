"""`codet5p retrieval --model M --data D`: text->code retrieval metrics of a checkpoint as JSON.

D is `corpus:split` (e.g. `stdlib:validation`), a JSON/JSONL file of pairs (query i's gold is
code i), a CoSQA retrieval file (`cosqa-retrieval-*-500.json`: queries against the code base
`code_idx_map.txt` beside it or `--code-base`), or UniXcoder's `test.jsonl` with
`--code-base codebase.jsonl` (matched by url). Ties count by expected rank; BM25 is
`rank_bm25.BM25Okapi` with its defaults (k1=1.5, b=0.75, epsilon=0.25).
"""

import argparse
import json
import sys

from codet5p_jax.evaluation import retrieval_sets
from codet5p_jax.evaluation.retrieval import (
    BM25_PARAMS,
    CODE_LENGTH,
    DEFAULT_KS,
    TEXT_LENGTH,
    evaluate_texts,
    is_corpus_name,
    load_corpus_pairs,
    load_model,
    random_baseline_mrr,
)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def load_set(data: str, code_base: str | None, skip_empty: bool, limit: int | None):
    """The `RetrievalSet` of `--data` (see the module docstring)."""
    if is_corpus_name(data):
        name, split = data.split(":", 1)
        pairs = load_corpus_pairs(name, split)[:limit]
        return retrieval_sets.RetrievalSet.from_pairs(pairs, data)
    if skip_empty and not code_base and not retrieval_sets.is_cosqa_retrieval_file(data):
        from codet5p_jax.evaluation.retrieval import load_pairs

        pairs = load_pairs(data, on_empty="skip", limit=limit)
        return retrieval_sets.RetrievalSet.from_pairs(pairs, data)
    return retrieval_sets.load_retrieval_set(data, code_base, limit)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p retrieval`: prints metrics as JSON; exit 2 on bad input."""
    p = argparse.ArgumentParser(prog="codet5p retrieval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF dir, orbax dir or training MODEL_DIR")
    p.add_argument("--data", default="stdlib:validation", help="corpus:split or JSON(L) file")
    p.add_argument("--code-base", default=None, help="CoSQA code_idx_map.txt / codebase.jsonl")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    p.add_argument("--text-length", type=int, default=TEXT_LENGTH)
    p.add_argument("--code-length", type=int, default=CODE_LENGTH)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--rerank-top-k", type=int, default=0, help="matching re-rank (bimodal)")
    p.add_argument("--bm25", action="store_true", help="also report the BM25 baseline")
    p.add_argument("--skip-empty", action="store_true", help="drop pairs with an empty side")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N")
    args = p.parse_args(argv)
    from codet5p_jax.pretrained import load_vocabulary

    try:
        rset = load_set(args.data, args.code_base, args.skip_empty, args.limit)
        model, params, tokenizer_dir = load_model(args.model)
        vocab = load_vocabulary(args.tokenizer or tokenizer_dir, args.model)
        ks = rset.ks()
        results = evaluate_texts(
            model, params, rset.queries, rset.codes, rset.gold, vocab.encode,
            text_length=args.text_length, code_length=args.code_length,
            batch_size=args.batch_size, ks=ks, rerank_top_k=args.rerank_top_k,
            with_bm25=args.bm25,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        print(f"codet5p retrieval: {e}", file=sys.stderr)
        return 2
    results["num_queries"] = len(rset.queries)
    results["num_candidates"] = len(rset.codes)
    if rset.dropped:
        results["dropped_label_0"] = rset.dropped
    skipped = [k for k in DEFAULT_KS if k not in ks]
    if skipped:
        results["skipped"] = f"R@{skipped}: corpus of {len(rset.codes)} codes is smaller than k"
    results["random_mrr"] = random_baseline_mrr(len(rset.codes))
    if args.bm25:
        results["bm25_params"] = BM25_PARAMS
    print(json.dumps(results, indent=2))
    return 0
