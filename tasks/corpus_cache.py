"""Prepared corpora: read once, deduplicate, split by file, and cache as TFRecord shards.

A `CorpusSpec` names a corpus (`kind` = `stdlib`, `directory`, `jsonl` or `pairs`). The first
`prepare_corpus` call writes, under `$CODET5P_CACHE_DIR/corpora/<name>-<fingerprint>/`:

* `code-{train,validation}-NNNNN-of-NNNNN.tfrecord`: `tf.train.Example`s with string features
  `code`, `language`, `path` (stage-1 data);
* `pairs-{train,validation}-...tfrecord`: `code`, `docstring`, `language`, `path` (stage 2 and
  the downstream summarization / generation tasks);
* `stats.json`: record counts per stream and split, duplicates and skip reasons.

Rules (documented in docs/data.md):
* **Dedup**: exact match ignoring whitespace (paper §4.1): the first occurrence in sorted path
  order wins; pairs are deduplicated on (code, text).
* **Split**: a file goes to `validation` when the first 32 bits of `sha1(relative path)` fall
  below `validation_fraction` (default 5 %) of 2^32, else to `train`; pairs follow their source
  file, so no function's file is on both sides.
* Writing goes to a temporary directory renamed into place, so a crash leaves nothing half-written.
  A `gs://` cache root (`CODET5P_CACHE_DIR=gs://...`, one copy for every host of a pod) has no
  atomic rename: the shards are built locally and uploaded, `stats.json` (the marker readers
  check) last.
The fingerprint covers the spec, the format version and (for `stdlib`) the interpreter version, so
a changed spec never reads a stale cache.
"""

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import sys
import sysconfig
import tempfile
from collections import Counter
from collections.abc import Iterator

from etils import epath

from tasks import corpus_sources as S
from tasks.function_pairs import function_pairs

FORMAT_VERSION = 2  # 2: pairs from all nine languages (was: Python only)
KINDS = ("stdlib", "directory", "jsonl", "pairs")
STREAMS = ("code", "pairs")
SPLITS = ("train", "validation")
ENV_CACHE_DIR = "CODET5P_CACHE_DIR"
ENV_STDLIB_MAX_FILES = "CODET5P_STDLIB_MAX_FILES"
_WS = re.compile(r"\s+")


def cache_root() -> epath.Path:
    """`$CODET5P_CACHE_DIR` (a local directory or `gs://...`), else `~/.cache/codet5p_jax`."""
    return epath.Path(os.environ.get(ENV_CACHE_DIR) or pathlib.Path.home() / ".cache/codet5p_jax")


def stdlib_dir() -> pathlib.Path:
    """The running interpreter's standard-library directory (the bundled corpus)."""
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """What to read and how to cut it.

    Attributes:
      name: Short identifier used in task names (`[a-z0-9_]+`).
      kind: `stdlib` (this interpreter's standard library), `directory` (source tree in the nine
        CodeT5+ languages), `jsonl` (lines with `code`, optional `language`) or `pairs`
        (CodeSearchNet-style `code`/`docstring` or `code_tokens`/`docstring_tokens`).
      path: File or directory (unused for `stdlib`).
      max_files: Use at most this many source files / JSONL records (None = all). For `stdlib`,
        None falls back to `$CODET5P_STDLIB_MAX_FILES` when set.
      validation_fraction: Share of files hashed into the validation split.
      num_shards: TFRecord shards per stream and split (more shards = file-level host sharding).
    """

    name: str
    kind: str
    path: str | None = None
    max_files: int | None = None
    validation_fraction: float = 0.05
    num_shards: int = 1

    def __post_init__(self):
        if not re.fullmatch(r"[a-z0-9_]+", self.name):
            raise ValueError(f"corpus name {self.name!r} must match [a-z0-9_]+")
        if self.kind not in KINDS:
            raise ValueError(f"corpus kind {self.kind!r} not in {KINDS}")
        if self.kind != "stdlib" and not self.path:
            raise ValueError(f"corpus {self.name!r} of kind {self.kind!r} needs a path")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction {self.validation_fraction} not in [0, 1)")
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")

    def effective_max_files(self) -> int | None:
        if self.max_files is None and self.kind == "stdlib":
            env = os.environ.get(ENV_STDLIB_MAX_FILES)
            return int(env) if env else None
        return self.max_files

    def source_path(self) -> epath.Path:
        if self.kind == "stdlib":
            return epath.Path(stdlib_dir())
        path = epath.Path(self.path)
        return path if "://" in str(self.path) else path.resolve()

    def fingerprint(self) -> str:
        key = dict(dataclasses.asdict(self), max_files=self.effective_max_files())
        key.update(path=str(self.source_path()), format=FORMAT_VERSION)
        if self.kind == "stdlib":
            key["python"] = sys.version
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def directory(self) -> epath.Path:
        return cache_root() / "corpora" / f"{self.name}-{self.fingerprint()}"


def _is_validation(path: str, fraction: float) -> bool:
    h = int(hashlib.sha1(path.encode("utf-8")).hexdigest()[:8], 16)
    return h < fraction * 2**32


def _shard_of(path: str, num_shards: int) -> int:
    return int(hashlib.md5(path.encode("utf-8")).hexdigest()[:8], 16) % num_shards


def shard_name(stream: str, split: str, index: int, num_shards: int) -> str:
    return f"{stream}-{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _records(spec: CorpusSpec, counts: Counter) -> Iterator[tuple[str, str, dict]]:
    """Yields `(stream, split_key, record)` in a deterministic order."""
    src, max_files = spec.source_path(), spec.effective_max_files()
    if spec.kind in ("stdlib", "directory"):
        if not src.is_dir():
            raise FileNotFoundError(f"corpus {spec.name!r}: directory {src} does not exist")
        for rec in S.iter_source_tree(src, counts, max_files=max_files):
            yield "code", rec["path"], rec
            if rec["language"] == "python":
                for pair in S.python_function_pairs(rec["code"], rec["path"], counts):
                    yield "pairs", rec["path"], pair
            else:  # the other eight languages: tree-sitter (same filters, tasks/function_pairs)
                pairs = function_pairs(rec["code"], rec["path"], rec["language"], counts)
                for pair in pairs:
                    yield "pairs", rec["path"], pair
    elif spec.kind == "jsonl":
        for i, rec in enumerate(S.iter_code_jsonl(src, counts)):
            if max_files is not None and i >= max_files:
                break
            yield "code", rec["path"], rec
    else:  # pairs: the code side doubles as stage-1 data
        for i, rec in enumerate(S.iter_pairs_jsonl(src, counts)):
            if max_files is not None and i >= max_files:
                break
            yield "pairs", rec["path"], rec
            yield "code", rec["path"], {k: rec[k] for k in ("path", "language", "code")}


def _example(rec: dict):
    import tensorflow as tf  # deferred: readers above stay TF-free

    feats = {
        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8")]))
        for k, v in rec.items()
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def prepare_corpus(spec: CorpusSpec, *, force: bool = False) -> epath.Path:
    """Builds the cached TFRecords of `spec` once and returns their directory.

    Raises:
      FileNotFoundError: The corpus path does not exist.
      ValueError: No usable code or pairs remain after skipping bad input.
    """
    out = spec.directory()
    if (out / "stats.json").is_file() and not force:
        return out
    import tensorflow as tf

    remote = "://" in str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=None if remote else out.parent))
    try:
        counts: Counter = Counter()
        seen: set[bytes] = set()
        n = {s: dict.fromkeys(SPLITS, 0) for s in STREAMS}
        writers = {
            (s, sp, i): tf.io.TFRecordWriter(str(tmp / shard_name(s, sp, i, spec.num_shards)))
            for s in STREAMS
            for sp in SPLITS
            for i in range(spec.num_shards)
        }
        duplicates = Counter()
        for stream, split_key, rec in _records(spec, counts):
            key = _WS.sub("", rec["code"]) + ("\0" + rec["docstring"] if stream == "pairs" else "")
            digest = hashlib.sha1(f"{stream}\0{key}".encode()).digest()
            if digest in seen:
                duplicates[stream] += 1
                continue
            seen.add(digest)
            split = "validation" if _is_validation(split_key, spec.validation_fraction) else "train"
            writers[stream, split, _shard_of(split_key, spec.num_shards)].write(_example(rec))
            n[stream][split] += 1
        for w in writers.values():
            w.close()
        stats = {
            "name": spec.name,
            "kind": spec.kind,
            "source": str(spec.source_path()),
            "records": n,
            "duplicates": dict(duplicates),
            "skipped": dict(counts),
        }
        if sum(n["code"].values()) + sum(n["pairs"].values()) == 0:
            raise ValueError(
                f"corpus {spec.name!r}: nothing usable in {spec.source_path()} "
                f"(skipped: {dict(counts) or 'no candidate files'})"
            )
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
        try:
            if remote:
                upload_directory(tmp, out)
                shutil.rmtree(tmp)
            else:
                _install(tmp, out, replace=force)
        except OSError:
            if force or not (out / "stats.json").is_file():
                raise  # a rebuild that could not replace the old copy must not pass for one
            shutil.rmtree(tmp)  # another process (host) finished first; keep its copy
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info(
        "corpus %s: code %s, pairs %s, duplicates %s, skipped %s",
        spec.name,
        n["code"],
        n["pairs"],
        dict(duplicates),
        dict(counts),
    )
    return out


def _install(built: pathlib.Path, out: pathlib.Path, *, replace: bool) -> None:
    """Renames the finished `built` directory to `out`.

    An existing `out` makes the rename fail (the caller keeps that copy: another process got
    there first) unless `replace`, which swaps it out: the old copy is moved aside, the new one
    renamed in, the old one deleted; if the second rename fails the old copy is put back, so
    `out` is always one whole corpus.
    """
    if not (replace and out.exists()):
        os.replace(built, out)
        return
    aside = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, aside / "corpus")
    try:
        os.replace(built, out)
    except OSError:
        os.replace(aside / "corpus", out)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def upload_directory(local: pathlib.Path, out: epath.Path, last: str = "stats.json") -> None:
    """Copies a directory built locally to a bucket, the file `last` last (readers test for it)."""
    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(local.iterdir(), key=lambda p: p.name == last):
        epath.Path(file).copy(out / file.name, overwrite=True)


def load_stats(spec: CorpusSpec) -> dict:
    """`stats.json` of the prepared corpus (preparing it first if needed)."""
    return json.loads((prepare_corpus(spec) / "stats.json").read_text())


def corpus_files(spec: CorpusSpec, stream: str, split: str) -> list[str]:
    """Shard paths of one stream and split, after checking the split is not empty.

    Raises:
      ValueError: The split holds no records (e.g. a code-only corpus has no pairs).
    """
    if stream not in STREAMS or split not in SPLITS:
        raise ValueError(f"unknown stream/split {stream!r}/{split!r}")
    directory = prepare_corpus(spec)
    stats = json.loads((directory / "stats.json").read_text())
    if stats["records"][stream][split] == 0:
        raise ValueError(
            f"corpus {spec.name!r} has no {stream} records in split {split!r} "
            f"(records: {stats['records']}, skipped: {stats['skipped']})"
        )
    return [
        str(directory / shard_name(stream, split, i, spec.num_shards))
        for i in range(spec.num_shards)
    ]
