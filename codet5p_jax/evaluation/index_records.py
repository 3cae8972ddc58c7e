"""Records a vector index is built from: one function (its code, optional description) per row.

Sources (`codet5p index --corpus SOURCE`, repeatable):

* a **JSONL / JSON file** in any language: CodeSearchNet lines (`code`, else the space-joined
  `code_tokens`; `docstring` / `docstring_tokens`; `language`, `path`, `func_name`), plain
  `{"code", "text"}` records, CoSQA `{"code", "doc"}` lists, or GenBench `{"input": "doc [SEP]
  code"}` lines;
* a **source directory** in the nine CodeT5+ languages: its documented functions (the stage-2
  pair extractors, `tasks.function_pairs`), with their doc comments as the description;
* a **registered corpus** `NAME` or `NAME:SPLIT` (`stdlib`, or any corpus registered with
  `tasks.register_corpus`): its prepared `pairs` stream (functions with their docstrings), both
  splits unless one is named.

Every record gets a `hash`: sha256 of the code with all whitespace removed, the key that
re-indexing and the RAG leakage guard compare (an exact duplicate re-indented is the same code).
"""

import hashlib
import json
import pathlib
import re

_WS = re.compile(r"\s+")
SPLITS = ("train", "validation")


class RecordError(ValueError):
    """A source that cannot be read as index records (the message names the file and line)."""


def code_hash(code: str) -> str:
    """sha256 hex of `code` with all whitespace removed (exact-duplicate key)."""
    return hashlib.sha256(_WS.sub("", code).encode("utf-8")).hexdigest()


def file_hash(path) -> str:
    """sha256 hex of a file's bytes (skips re-reading an unchanged source)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _joined(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def record_from_json(obj: dict, where: str) -> dict:
    """`{"code", "text", "language", "path"}` of one JSON object (see the module docstring).

    Raises:
      RecordError: No code field, or an empty code.
    """
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "input" in obj and " [SEP] " in str(obj["input"]):  # GenBench MRR lines
        text, code = str(obj["input"]).split(" [SEP] ", 1)
    else:
        code = obj.get("code") or _joined(obj.get("code_tokens") or obj.get("function_tokens"))
        text = next(
            (_joined(obj[k]) for k in ("doc", "text", "nl", "docstring", "docstring_tokens")
             if obj.get(k)),
            "",
        )  # fmt: skip
    code, text = str(code).strip(), str(text).strip()
    if not code:
        raise RecordError(
            f"{where}: no code (fields code / code_tokens / function_tokens / GenBench input); "
            f"keys {sorted(obj)}"
        )
    path = obj.get("path") or obj.get("url") or where
    if obj.get("func_name"):
        path = f"{path}:{obj['func_name']}"
    return {"code": code, "text": text, "language": str(obj.get("language") or ""), "path": path}


def read_file_records(path) -> list[dict]:
    """Records of a `.jsonl` (one object per line) or `.json` (a list) file.

    Raises:
      FileNotFoundError: `path` does not exist.
      RecordError: Bad JSON or a record without code, naming `file:line`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e
        if not isinstance(items, list):
            raise RecordError(f"{path}: a .json corpus must be a list of records")
        objs = [(f"{path}[{i}]", o) for i, o in enumerate(items)]
    else:
        objs = []
        for lineno, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                objs.append((f"{path.name}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    records = [record_from_json(o, where) for where, o in objs]
    if not records:
        raise RecordError(f"{path}: no records")
    return records


def read_corpus_records(name: str, split: str | None = None) -> list[dict]:
    """Records of a registered corpus's `pairs` stream (`tasks.corpus_cache`).

    Raises:
      RecordError: `name` is not a registered corpus, or `split` is unknown.
    """
    import tensorflow as tf

    import tasks  # noqa: F401 (registers the bundled corpus)
    from tasks import registry
    from tasks.corpus_cache import corpus_files

    spec = registry.registered_spec(name)
    if spec is None:
        raise RecordError(
            f"unknown corpus {name!r}: not a file and not a registered corpus "
            f"(registered: {registry.registered_corpora()})"
        )
    if split is not None and split not in SPLITS:
        raise RecordError(f"corpus {name!r} has splits {SPLITS}, not {split!r}")
    keys = ("code", "docstring", "language", "path")
    features = {k: tf.io.FixedLenFeature([], tf.string) for k in keys}
    records = []
    for sp in [split] if split else SPLITS:
        for raw in tf.data.TFRecordDataset(corpus_files(spec, "pairs", sp)):
            ex = {k: v.numpy().decode("utf-8") for k, v in
                  tf.io.parse_single_example(raw, features).items()}  # fmt: skip
            records.append(
                {"code": ex["code"], "text": ex["docstring"], "language": ex["language"],
                 "path": f"{name}:{sp}:{ex['path']}"}
            )  # fmt: skip
    return records


def read_tree_records(root) -> tuple[list[dict], str]:
    """`(records, content hash)` of the documented functions of a source tree in the nine
    languages (`tasks.function_pairs`, the stage-2 pair extractor; Python via `ast`)."""
    from collections import Counter

    from tasks import corpus_sources, function_pairs

    root, counts, records = pathlib.Path(root), Counter(), []
    digest = hashlib.sha256()
    for rec in corpus_sources.iter_source_tree(root, counts):
        digest.update(f"{rec['path']}\0{code_hash(rec['code'])}\0".encode())
        if rec["language"] == "python":
            pairs = corpus_sources.python_function_pairs(rec["code"], rec["path"], counts)
        else:
            pairs = function_pairs.function_pairs(rec["code"], rec["path"], rec["language"], counts)
        records += [{"code": x["code"], "text": x["docstring"], "language": x["language"],
                     "path": x["path"]} for x in pairs]  # fmt: skip
    if not records:
        raise RecordError(f"{root}: no documented functions in the nine languages ({dict(counts)})")
    return records, digest.hexdigest()


def read_source(source: str) -> tuple[str, list[dict], str]:
    """`(source key, records, content hash)` of a file, a source directory or a corpus.

    The content hash is the file's sha256; for a directory, the hash of its files' paths and
    code; for a corpus `NAME[:SPLIT]`, the hash of its records (a prepared corpus is
    fingerprinted by its spec, so this is cheap to recompute).
    """
    path = pathlib.Path(source)
    if path.is_dir():
        records, digest = read_tree_records(path)
        return str(path.resolve()), records, digest
    if path.exists():
        return str(path.resolve()), read_file_records(path), file_hash(path)
    if path.suffix in (".jsonl", ".json") or "/" in source:
        raise FileNotFoundError(f"corpus file not found: {source}")
    name, _, split = source.partition(":")
    records = read_corpus_records(name, split or None)
    digest = hashlib.sha256("".join(code_hash(r["code"]) for r in records).encode()).hexdigest()
    return source, records, digest
