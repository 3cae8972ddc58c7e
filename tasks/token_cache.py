"""The stage-1 corpus tokenized once, with the Rust tokenizer's `encode_batch`, and cached.

Stage 1 tokenizes whole files and keeps those of 50-2,000 tokens (`chunking`). Done inside
tf.data, that is one Python callback per file, repeated every epoch and by each of the three
stage-1 tasks of the joint mixture; on the stdlib 94 % of the tokenized text is then dropped by
the size filter, so the pipeline delivered about 6 % of the tokenizer's own speed. Here the
prepared corpus (`corpus_cache`) is tokenized once per (corpus content, tokenizer, size filter)
into `$CODET5P_CACHE_DIR/tokenized/<corpus dir>-<key>/`:

* `code-{train,validation}-NNNNN-of-NNNNN.tfrecord`: one `tf.train.Example` per corpus record,
  in the same shards and order (so file- and record-level host sharding and the file shuffle are
  those of the text source): `tokens` (bytes: little-endian int32 ids, empty when dropped) and
  `kept` (int64: 1 when the file passes the size filter);
* `tokenized.json`: counts per split, the filter, the tokenizer and corpus digests, seconds.

`key` is a SHA-256 of the corpus shards' bytes, the tokenizer's serialized JSON
(`tokenizers.Tokenizer.to_str()`), the filter and `FORMAT_VERSION`, so a changed corpus, tokenizer
or filter never reads stale ids. The directory is written under a temporary name and renamed into
place: a crash leaves nothing half-written, and a concurrent builder's copy is kept.

The ids equal `chunking.tokenize_and_filter` (the tf.data path) and plain tokenization followed by
the filter; `tests/tasks/test_token_cache.py` compares them file by file.
"""

import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile
import time

import numpy as np
from etils import epath
from tokenizers import pre_tokenizers

from tasks.corpus_cache import (
    SPLITS,
    CorpusSpec,
    cache_root,
    corpus_files,
    prepare_corpus,
    upload_directory,
)

FORMAT_VERSION = 2  # 2: prefix cuts never split an added token
ENCODE_BATCH = 1024  # texts per `encode_batch` call: enough work for every core, bounded memory
_digests: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256, per process


def _file_digest(path: epath.Path) -> str:
    st = path.stat()  # epath's StatResult: gs:// too (length, mtime in whole seconds)
    key = (str(path), st.length, st.mtime)
    if key not in _digests:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def tokenizer_digest(vocabulary) -> str:
    """SHA-256 of the vocabulary's serialized `tokenizers.Tokenizer` (after its added tokens)."""
    tokenizer = getattr(vocabulary, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "to_str"):
        raise ValueError(
            f"pretokenized stage-1 data needs a vocabulary over HF `tokenizers` (a BPEVocabulary), "
            f"got {type(vocabulary).__name__}; register the corpus with pretokenize=False"
        )
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()


def code_shards(spec: CorpusSpec) -> dict[str, list[epath.Path]]:
    """Code shards per split; a split without records has none (corpus_files would raise)."""
    directory = prepare_corpus(spec)
    records = json.loads((directory / "stats.json").read_text())["records"]["code"]
    return {
        split: [epath.Path(p) for p in corpus_files(spec, "code", split)]
        for split in SPLITS
        if records[split]
    }


def cache_directory(
    spec: CorpusSpec, vocabulary, min_tokens: int | None, max_tokens: int | None
) -> epath.Path:
    """Where the tokenized corpus of this (corpus content, tokenizer, filter) lives."""
    shards = code_shards(spec)
    key = {
        "format": FORMAT_VERSION,
        "corpus": {split: [_file_digest(p) for p in paths] for split, paths in shards.items()},
        "tokenizer": tokenizer_digest(vocabulary),
        "min_tokens": min_tokens,
        "max_tokens": max_tokens,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "tokenized" / f"{spec.directory().name}-{digest}"


# Cut points that are pre-token boundaries of GPT-2 byte-level pre-tokenization both in the whole
# text and at the end of the prefix (no whitespace run, ` ?word`, contraction or punctuation run
# crosses them, and no lookahead sees past them): a newline between two non-space characters, and
# an ASCII letter followed by an operator or bracket (a letter run ends there; `'` and quotes are
# left out because of the `'s`-style contractions).
_CUT = re.compile(r"(?<=\S)\n(?=\S)|(?<=[A-Za-z])(?=[(),.:;=\[\]{}<>+*/-])")


def _cuts_exactly(tokenizer) -> bool:
    """Whether a `_CUT` prefix tokenizes as the same ids inside the whole text."""
    pre = tokenizer.pre_tokenizer
    if tokenizer.normalizer is not None or not isinstance(pre, pre_tokenizers.ByteLevel):
        return False
    added = tokenizer.get_added_tokens_decoder().values()
    return pre.use_regex and not any("\n" in t.content for t in added)


def _splits_added_token(text: str, cut: int, added: tuple[str, ...]) -> bool:
    """Whether an occurrence of an added token (`[ENC]`, `<extra_id_0>`, ...) spans `cut`.

    Added tokens are matched in the text before pre-tokenization, so a cut inside one (e.g.
    between `C` and `]` of `[ENC]`) would tokenize the prefix's end differently.
    """
    for token in added:
        n = len(token)
        start = text.find(token, max(0, cut - n + 1), cut + n - 1)
        while 0 <= start < cut:
            if start + n > cut:
                return True
            start = text.find(token, start + 1, cut + n - 1)
    return False


def prefix_cut(text: str, limit: int, added: tuple[str, ...], tries: int = 16) -> int:
    """End of the longest prefix within `limit` characters whose ids start the whole text's.

    The last `_CUT` before `limit` that no added token spans (among the last `tries`); 0 when
    there is none (the text is then tokenized whole).
    """
    cuts = [m.end() for m in _CUT.finditer(text, 0, limit)]
    for cut in reversed(cuts[-tries:]):
        if not _splits_added_token(text, cut, added):
            return cut
    return 0


def encode_files(
    vocabulary, texts: list[str], min_tokens: int | None, max_tokens: int | None
) -> list[np.ndarray | None]:
    """Token ids of each text, or None when the size filter drops it (batched, all cores).

    The ids and the kept set equal plain tokenization followed by the filter (and the tf.data
    path, `chunking.tokenize_and_filter`). A text longer than `4 * max_tokens` characters is
    first tokenized up to its `prefix_cut`: those ids are exactly the first ids of the whole
    text, so `max_tokens` of them prove the file too long without a full tokenization (code
    averages about 3.3 characters per token, so nearly every long file is settled by its
    prefix; one without a cut point is tokenized whole).
    """
    out: list[np.ndarray | None] = [None] * len(texts)
    todo = list(range(len(texts)))
    tokenizer = vocabulary.tokenizer
    if max_tokens is not None and _cuts_exactly(tokenizer):
        added = tuple(t.content for t in tokenizer.get_added_tokens_decoder().values())
        limit, prefixes = 4 * max_tokens, {}
        for i in todo:
            if len(texts[i]) > limit:
                cut = prefix_cut(texts[i], limit, added)
                if cut:
                    prefixes[i] = texts[i][:cut]
        if prefixes:
            ids = vocabulary.encode_batch(list(prefixes.values()))
            too_long = {i for i, x in zip(prefixes, ids, strict=True) if len(x) >= max_tokens}
            todo = [i for i in todo if i not in too_long]
    for i, ids in zip(todo, vocabulary.encode_batch([texts[i] for i in todo]), strict=True):
        n = len(ids)
        if (min_tokens is None or n >= min_tokens) and (max_tokens is None or n <= max_tokens):
            out[i] = np.asarray(ids, "<i4")
    return out


def read_code(path: epath.Path, corpus: str):
    """Yields lists of up to `ENCODE_BATCH` decoded `code` strings of one shard, in order."""
    import tensorflow as tf  # deferred: the key computation above stays TF-free

    batch: list[str] = []
    try:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            raw = tf.train.Example.FromString(record).features.feature["code"].bytes_list.value[0]
            batch.append(raw.decode("utf-8", errors="replace"))
            if len(batch) == ENCODE_BATCH:
                yield batch
                batch = []
    except tf.errors.OpError as e:
        reason = (e.message or type(e).__name__).splitlines()[0]
        raise ValueError(f"corpus {corpus!r}: cannot read {path}: {reason}") from None
    if batch:
        yield batch


def _example(ids: np.ndarray | None) -> bytes:
    import tensorflow as tf

    feats = {
        "tokens": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[b"" if ids is None else ids.tobytes()])
        ),
        "kept": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(ids is not None)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def prepare_tokenized(
    spec: CorpusSpec, vocabulary, min_tokens: int | None, max_tokens: int | None
) -> epath.Path:
    """Builds the tokenized code stream of `spec` once and returns its directory.

    Raises:
      ValueError: A corpus shard cannot be read (one line naming it), or the vocabulary is not
        a `tokenizers` one.
      FileNotFoundError: The corpus source does not exist (from `prepare_corpus`).
    """
    out = cache_directory(spec, vocabulary, min_tokens, max_tokens)
    if (out / "tokenized.json").is_file():
        return out
    import tensorflow as tf

    t0 = time.perf_counter()
    # Built locally, then renamed into place or (gs://) uploaded with tokenized.json last, as
    # corpus_cache.prepare_corpus does: readers test for that file.
    remote = "://" in str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=None if remote else out.parent))
    counts = {split: {"records": 0, "kept": 0, "tokens": 0} for split in SPLITS}
    try:
        for split, paths in code_shards(spec).items():
            for path in paths:
                with tf.io.TFRecordWriter(str(tmp / path.name)) as writer:
                    for texts in read_code(path, spec.name):
                        for ids in encode_files(vocabulary, texts, min_tokens, max_tokens):
                            writer.write(_example(ids))
                            c = counts[split]
                            c["records"] += 1
                            c["kept"] += ids is not None
                            c["tokens"] += 0 if ids is None else len(ids)
        meta = {
            "corpus": spec.name,
            "min_tokens": min_tokens,
            "max_tokens": max_tokens,
            "tokenizer_sha256": tokenizer_digest(vocabulary),
            "counts": counts,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / "tokenized.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            if remote:
                upload_directory(tmp, out, last="tokenized.json")
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, out)
        except OSError:
            if not (out / "tokenized.json").is_file():
                raise
            shutil.rmtree(tmp)  # another process finished first; keep its copy
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info(
        "tokenized corpus %s in %.1f s: kept %s of %s train files (%s tokens) -> %s",
        spec.name,
        meta["seconds"],
        counts["train"]["kept"],
        counts["train"]["records"],
        counts["train"]["tokens"],
        out,
    )
    return out


def tokenized_files(
    spec: CorpusSpec, vocabulary, split: str, min_tokens: int | None, max_tokens: int | None
) -> list[str]:
    """Tokenized shard paths of one split (building the cache first if needed).

    Raises:
      ValueError: The split holds no records (as `corpus_cache.corpus_files`).
    """
    corpus_files(spec, "code", split)  # the one-line "no code records in split" error
    directory = prepare_tokenized(spec, vocabulary, min_tokens, max_tokens)
    return [str(directory / epath.Path(p).name) for p in corpus_files(spec, "code", split)]
