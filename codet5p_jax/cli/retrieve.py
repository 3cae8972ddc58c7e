"""`codet5p retrieve`: offline retrieval for RAG fine-tuning (neighbours of every pair as JSONL).

    codet5p retrieve --index DIR --input train.jsonl --output train.rag.jsonl -k 2

Each output line is `{"query", "target", "neighbours": [{"id", "score", "code"}]}`; the pair's own
code and its exact duplicates are never its neighbours (`--keep-gold` turns that guard off, to
measure leakage). `tasks.retrieval_augmented.register_rag_task` trains on these files.
"""

import argparse
import sys

PROG = "codet5p retrieve"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p retrieve`; returns the exit status."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="index directory from `codet5p index`")
    p.add_argument("--input", required=True, help="JSONL/JSON pairs (text and code)")
    p.add_argument("--output", required=True, help="destination JSONL")
    p.add_argument("-k", type=int, default=1, help="neighbours per pair")
    p.add_argument("--keep-gold", action="store_true", help="do not exclude the pair's own code")
    args = p.parse_args(argv)
    from codet5p_jax.convert.mapping import ConversionError
    from codet5p_jax.evaluation import rag

    if args.k < 1:
        print(f"{PROG}: -k must be >= 1, got {args.k}", file=sys.stderr)
        return 2
    try:
        n = rag.write_neighbours(
            args.input, args.index, args.output, k=args.k, exclude_gold=not args.keep_gold
        )
    except (FileNotFoundError, ValueError, ConversionError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    print(f"{PROG}: wrote {n} rows to {args.output}")
    return 0
