"""`codet5p retrieval --model M --data D`: text->code retrieval metrics of a checkpoint as JSON."""

import argparse
import json
import sys

from codet5p_jax.evaluation.retrieval import (
    CODE_LENGTH,
    DEFAULT_KS,
    TEXT_LENGTH,
    evaluate_pairs,
    load_eval_pairs,
    load_model,
    random_baseline_mrr,
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p retrieval`: prints metrics as JSON; exit 2 on bad input."""
    p = argparse.ArgumentParser(prog="codet5p retrieval", description=__doc__)
    p.add_argument("--model", required=True, help="HF dir, orbax dir or training MODEL_DIR")
    p.add_argument("--data", default="stdlib:validation", help="corpus:split or JSON(L) file")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    p.add_argument("--text-length", type=int, default=TEXT_LENGTH)
    p.add_argument("--code-length", type=int, default=CODE_LENGTH)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rerank-top-k", type=int, default=0, help="matching re-rank (bimodal)")
    p.add_argument("--bm25", action="store_true", help="also report the BM25 baseline")
    p.add_argument("--skip-empty", action="store_true", help="drop pairs with an empty side")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs")
    args = p.parse_args(argv)
    from tasks.vocabularies import CodeT5Vocabulary

    try:
        pairs = load_eval_pairs(
            args.data, on_empty="skip" if args.skip_empty else "error", limit=args.limit
        )
        model, params, tokenizer_dir = load_model(args.model)
        vocab = CodeT5Vocabulary(args.tokenizer or tokenizer_dir)
        ks = tuple(k for k in DEFAULT_KS if k <= len(pairs))
        results = evaluate_pairs(
            model, params, pairs, vocab.encode, text_length=args.text_length,
            code_length=args.code_length, batch_size=args.batch_size, ks=ks,
            rerank_top_k=args.rerank_top_k, with_bm25=args.bm25,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        print(f"codet5p retrieval: {e}", file=sys.stderr)
        return 2
    results["num_pairs"] = len(pairs)
    skipped = [k for k in DEFAULT_KS if k > len(pairs)]
    if skipped:
        results["skipped"] = f"R@{skipped}: corpus of {len(pairs)} pairs is smaller than k"
    results["random_mrr"] = random_baseline_mrr(len(pairs))
    print(json.dumps(results, indent=2))
    return 0
