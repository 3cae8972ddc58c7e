"""`codet5p prepare-corpus`: read, deduplicate, split and cache a corpus (see corpus_cache).

Usage:
  codet5p prepare-corpus                       # the bundled stdlib corpus
  codet5p prepare-corpus --name mycode --kind directory --path /src [--max-files N]
  codet5p prepare-corpus --name csn --kind pairs --path python.jsonl
Prints the cache directory and the record / duplicate / skip counts as JSON. Tasks prepare
their corpus on first use anyway; running this first makes the cost explicit (and lets a
cluster prepare once on shared storage: set CODET5P_CACHE_DIR).
"""

import argparse
import json
import logging

from tasks.corpus_cache import KINDS, CorpusSpec, load_stats, prepare_corpus


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p prepare-corpus`."""
    parser = argparse.ArgumentParser(prog="codet5p prepare-corpus")
    parser.add_argument("--name", default="stdlib", help="corpus name ([a-z0-9_]+)")
    parser.add_argument("--kind", default="stdlib", choices=KINDS)
    parser.add_argument("--path", default=None, help="source tree or JSONL (not for stdlib)")
    parser.add_argument("--max-files", type=int, default=None)
    parser.add_argument("--validation-fraction", type=float, default=0.05)
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="rebuild an existing cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        spec = CorpusSpec(
            name=args.name,
            kind=args.kind,
            path=args.path,
            max_files=args.max_files,
            validation_fraction=args.validation_fraction,
            num_shards=args.num_shards,
        )
        directory = prepare_corpus(spec, force=args.force)
    except (ValueError, FileNotFoundError) as e:
        print(f"codet5p prepare-corpus: {e}")
        return 1
    print(json.dumps({"directory": str(directory), **load_stats(spec)}, indent=1))
    return 0
