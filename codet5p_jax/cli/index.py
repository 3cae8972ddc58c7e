"""`codet5p index`: embed a code corpus into a FAISS index (id -> record table beside it).

    codet5p index --model MODEL --corpus data.jsonl [--corpus stdlib ...] --index DIR
    codet5p index --model MODEL --corpus more.jsonl --index DIR        # adds only new functions
    codet5p index ... --kind ivf --nlist 1024 | --kind hnsw --hnsw-m 32

MODEL is an embedding-capable checkpoint (an HF download of codet5p-110m-embedding or
codet5p-220m-bimodal, a stage-2 MODEL_DIR, an orbax dir). A corpus is a JSONL/JSON file in any
language (CodeSearchNet, `{"code", "text"}`, GenBench, CoSQA), a source directory (its documented
functions in the nine CodeT5+ languages) or a registered corpus `NAME[:SPLIT]` (`stdlib`).
Running it again with the same corpus and checkpoint does nothing (content hashes); see
docs/retrieval_index.md for the layout and the exact / IVF / HNSW trade-off.
"""

import argparse
import sys

from codet5p_jax.evaluation import vector_index

PROG = "codet5p index"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="embedding-capable checkpoint")
    p.add_argument(
        "--corpus",
        action="append",
        required=True,
        help="JSONL/JSON file, source dir or corpus NAME[:SPLIT]",
    )
    p.add_argument("--index", required=True, help="index directory (created if missing)")
    p.add_argument("--kind", choices=vector_index.KINDS, default="flat")
    p.add_argument("--nlist", type=int, default=None, help="ivf cells (default ~4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=vector_index.DEFAULT_NPROBE)
    p.add_argument("--hnsw-m", type=int, default=vector_index.DEFAULT_HNSW_M)
    p.add_argument("--ef-search", type=int, default=vector_index.DEFAULT_EF_SEARCH)
    p.add_argument("--code-length", type=int, default=360, help="code tokens incl. <s> </s>")
    p.add_argument("--batch-size", type=int, default=64, help="rows per step over all devices")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    p.add_argument("--rebuild", action="store_true", help="discard the existing index")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p index`; returns the exit status."""
    args = build_parser().parse_args(argv)
    from codet5p_jax.convert.mapping import ConversionError
    from codet5p_jax.evaluation.indexing import index_corpus

    for flag in ("nlist", "nprobe", "hnsw_m", "ef_search", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            print(f"{PROG}: --{flag.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    try:
        report = index_corpus(
            args.index, args.corpus, args.model, kind=args.kind, tokenizer=args.tokenizer,
            code_length=args.code_length, batch_size=args.batch_size, nlist=args.nlist,
            hnsw_m=args.hnsw_m, nprobe=args.nprobe, ef_search=args.ef_search,
            rebuild=args.rebuild, progress=not args.no_progress,
        )  # fmt: skip
    except (FileNotFoundError, ValueError, ConversionError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    skipped = f", {len(report.skipped_sources)} unchanged source(s) skipped"
    print(
        f"{args.index}: added {report.added}, {report.duplicates} already indexed"
        f"{skipped if report.skipped_sources else ''}; {report.total} rows"
    )
    return 0
