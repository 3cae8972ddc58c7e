"""`codet5p train-tokenizer`: train a CodeT5-recipe byte-level BPE on any code corpus.

The recipe of the CodeT5 repository's `tokenizer/train_tokenizer.py` (CODET5P_FACTS §2.1):
`ByteLevelBPETokenizer().train(..., vocab_size=32000, min_frequency=3,
special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"])`, so ids 0-4 match the released
tokenizer. The output directory holds `vocab.json` + `merges.txt` (+ `training.json`), which
`CodeT5Vocabulary(path)` loads; sentinels and `[ENC]`/`[TDEC]`/`[CDEC]` are appended there, and a
vocabulary smaller than 32,000 is padded so the special ids keep the released layout.

Without any tokenizer configured, the bundled tasks use `default_stdlib_tokenizer_dir()`: this
recipe trained once on the stdlib corpus's train split and cached (see tasks/vocabularies.py).

Usage:
  codet5p train-tokenizer --out DIR [--vocab-size 32000] [--min-frequency 3] PATH...
  codet5p train-tokenizer --out DIR --stdlib [--max-files N]
PATH is a source tree (files in the nine CodeT5+ languages) or a JSONL file with `code`.
"""

import json
import logging
import os
import pathlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator

from etils import epath

from tasks import corpus_sources
from tasks.corpus_cache import CorpusSpec, cache_root, corpus_files

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<mask>")
DEFAULT_VOCAB_SIZE = 32_000
DEFAULT_MIN_FREQUENCY = 3


def train_bpe(
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    min_frequency: int = DEFAULT_MIN_FREQUENCY,
) -> epath.Path:
    """Trains the byte-level BPE and writes `vocab.json`, `merges.txt`, `training.json`.

    Args:
      texts: Training documents.
      out_dir: Output directory (written via a temporary directory, then renamed).
      vocab_size: Target size including the 5 special tokens (at most 32,000 for CodeT5+).
      min_frequency: Minimum pair frequency for a merge.

    Raises:
      ValueError: Bad sizes, or no non-empty training text.
    """
    from tokenizers import ByteLevelBPETokenizer

    if not len(SPECIAL_TOKENS) + 256 <= vocab_size <= DEFAULT_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be in [{len(SPECIAL_TOKENS) + 256}, 32000]")
    counter = Counter()

    def counted() -> Iterator[str]:
        for t in texts:
            if t and t.strip():
                counter["documents"] += 1
                yield t

    tok = ByteLevelBPETokenizer()  # no prefix space, no lowercasing: as CodeT5
    tok.train_from_iterator(
        counted(),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    if counter["documents"] == 0:
        raise ValueError("no non-empty training text for the tokenizer")
    out = epath.Path(out_dir)
    remote = "://" in str(out)  # gs://: built locally, uploaded with vocab.json (the marker) last
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=None if remote else out.parent))
    try:
        tok.save_model(str(tmp))
        meta = {
            "recipe": "CodeT5 ByteLevelBPETokenizer",
            "vocab_size_requested": vocab_size,
            "vocab_size": tok.get_vocab_size(),
            "min_frequency": min_frequency,
            "special_tokens": list(SPECIAL_TOKENS),
            "documents": counter["documents"],
        }
        (tmp / "training.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            out.rmtree()
        if remote:
            out.mkdir(parents=True, exist_ok=True)
            for file in sorted(tmp.iterdir(), key=lambda p: p.name == "vocab.json"):
                epath.Path(file).copy(out / file.name, overwrite=True)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("trained BPE: %s -> %s", meta, out)
    return out


def iter_corpus_texts(spec: CorpusSpec, split: str = "train") -> Iterator[str]:
    """Code strings of a prepared corpus split (read from its TFRecords)."""
    import tensorflow as tf

    for record in tf.data.TFRecordDataset(corpus_files(spec, "code", split)):
        ex = tf.io.parse_single_example(record, {"code": tf.io.FixedLenFeature([], tf.string)})
        yield ex["code"].numpy().decode("utf-8")


def default_stdlib_tokenizer_dir(vocab_size: int = DEFAULT_VOCAB_SIZE) -> epath.Path:
    """The stdlib-trained tokenizer used when none is configured; trained on first call."""
    spec = CorpusSpec(name="stdlib", kind="stdlib")
    out = cache_root() / "tokenizers" / f"stdlib-bpe{vocab_size}-{spec.fingerprint()}"
    if not (out / "vocab.json").is_file():
        logging.warning("training the default stdlib tokenizer into %s (once)", out)
        train_bpe(iter_corpus_texts(spec), out, vocab_size=vocab_size)
    return out


def texts_from_paths(paths: list[str], max_files: int | None) -> Iterator[str]:
    counts: Counter = Counter()
    for p in paths:
        path = epath.Path(p)
        if path.is_dir():
            records = corpus_sources.iter_source_tree(path, counts, max_files=max_files)
        else:
            records = corpus_sources.iter_code_jsonl(path, counts)
        for rec in records:
            yield rec["code"]
    if counts:
        logging.warning("tokenizer training input: skipped %s", dict(counts))
