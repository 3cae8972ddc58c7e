"""`codet5p search`: the top-k records of an index for a natural-language (or code) query.

    codet5p search --index DIR --query "read a json file" -k 10 [--json]

The query is embedded with the index's own checkpoint (recorded in its manifest; `--model`
points elsewhere if it moved, and must have the same fingerprint) as `<s> query </s>` (64 tokens).
"""

import argparse
import json
import sys

PROG = "codet5p search"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="index directory from `codet5p index`")
    p.add_argument("--query", action="append", required=True, help="query text (repeatable)")
    p.add_argument("-k", type=int, default=10, help="results per query")
    p.add_argument("--model", default=None, help="checkpoint (default: the manifest's)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    p.add_argument("--nprobe", type=int, default=None, help="ivf: cells visited")
    p.add_argument("--ef-search", type=int, default=None, help="hnsw: candidate list size")
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    return p


def _preview(code: str, lines: int = 3) -> str:
    rows = code.strip().splitlines()
    more = "\n      ..." if len(rows) > lines else ""
    return "\n".join("      " + r for r in rows[:lines]) + more


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p search`; returns the exit status."""
    args = build_parser().parse_args(argv)
    from codet5p_jax.convert.mapping import ConversionError
    from codet5p_jax.evaluation import rag

    if args.k < 1:
        print(f"{PROG}: -k must be >= 1, got {args.k}", file=sys.stderr)
        return 2
    if any(not q.strip() for q in args.query):
        print(f"{PROG}: --query is empty", file=sys.stderr)
        return 2
    try:
        retriever = rag.Retriever.open(args.index, model=args.model, tokenizer=args.tokenizer)
        hits = retriever.retrieve(args.query, args.k, nprobe=args.nprobe, ef_search=args.ef_search)
    except (FileNotFoundError, ValueError, ConversionError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    for query, row in zip(args.query, hits, strict=True):
        if args.json:
            for rank, (record, score) in enumerate(row, 1):
                out = {"query": query, "rank": rank, "score": score, **record}
                print(json.dumps(out, ensure_ascii=False))
            continue
        print(f"query: {query}")
        for rank, (record, score) in enumerate(row, 1):
            print(f"  {rank:>3}  {score:+.4f}  id {record['id']}  {record['path']}")
            print(_preview(record["code"]))
    return 0
