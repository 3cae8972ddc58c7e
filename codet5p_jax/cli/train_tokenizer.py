"""`codet5p train-tokenizer`: a CodeT5-recipe byte-level BPE (see `tasks.tokenizer_training`)."""

import argparse
import json
import logging

from tasks.corpus_cache import CorpusSpec
from tasks.tokenizer_training import (
    DEFAULT_MIN_FREQUENCY,
    DEFAULT_VOCAB_SIZE,
    iter_corpus_texts,
    texts_from_paths,
    train_bpe,
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p train-tokenizer`."""
    parser = argparse.ArgumentParser(
        prog="codet5p train-tokenizer", description="Train a byte-level BPE with the CodeT5 recipe."
    )
    parser.add_argument("paths", nargs="*", help="source trees or JSONL files with `code`")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--stdlib", action="store_true", help="train on the bundled stdlib corpus")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--min-frequency", type=int, default=DEFAULT_MIN_FREQUENCY)
    parser.add_argument("--max-files", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.stdlib == bool(args.paths):
        parser.error("give either PATH... or --stdlib")
    if args.stdlib:
        texts = iter_corpus_texts(CorpusSpec("stdlib", "stdlib", max_files=args.max_files))
    else:
        texts = texts_from_paths(args.paths, args.max_files)
    try:
        out = train_bpe(texts, args.out, args.vocab_size, args.min_frequency)
    except (ValueError, FileNotFoundError) as e:
        print(f"codet5p train-tokenizer: {e}")
        return 1
    print(json.loads((out / "training.json").read_text()))
    return 0
