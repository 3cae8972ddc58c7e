"""Retrieval test sets: queries, a candidate code base, and each query's gold index in it.

Three shapes, told apart by `load_retrieval_set`:

* pairs (`retrieval.load_pairs`): query i's gold is code i, the base is the pairs' codes
  (CodeSearchNet / GenBench / AdvTest samples, the bundled stdlib pairs);
* CoSQA retrieval (CoCLR's protocol, read by the CodeT5+ script as well): records carry a
  `retrieval_idx` into a separate code base (`code_idx_map.txt`, a JSON object
  `{code: index}`; 6,267 codes for the dev and test queries), and every query is ranked against
  the whole base. Records whose `label` is not 1 are dropped (never positives);
* a UniXcoder-style code base (`codebase.jsonl` beside `test.jsonl`): queries and codes are
  matched by `url`, and the base may hold more codes than there are queries.
"""

import dataclasses
import json
import pathlib

import numpy as np

from codet5p_jax.evaluation import retrieval

COSQA_CODE_BASE = "code_idx_map.txt"  # CoCLR's file name, looked for beside the queries


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    """Queries ranked against a code base.

    Attributes:
      queries: Query texts.
      codes: The candidate codes (the whole base).
      gold: `[Q]` index of each query's gold code in `codes`.
      source: Where the set came from (for reports).
      dropped: Records left out (CoSQA label-0 pairs).
    """

    queries: tuple[str, ...]
    codes: tuple[str, ...]
    gold: np.ndarray
    source: str
    dropped: int = 0

    @classmethod
    def from_pairs(cls, pairs, source: str) -> "RetrievalSet":
        """Query i's gold is code i."""
        queries = tuple(p.text for p in pairs)
        return cls(queries, tuple(p.code for p in pairs), np.arange(len(queries)), source)

    def ks(self, ks=retrieval.DEFAULT_KS) -> tuple[int, ...]:
        """The `ks` this base is large enough for (R@k with k >= the base size is trivial)."""
        return tuple(k for k in ks if k <= len(self.codes))


def _read_json_list(path: pathlib.Path) -> list:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(items).__name__}")
    return items


def read_cosqa_code_base(path) -> tuple[str, ...]:
    """The codes of a CoSQA `code_idx_map.txt` (`{code: index}`), in index order.

    Raises:
      FileNotFoundError: No such file.
      ValueError: Not a JSON object, or the indices are not exactly 0..N-1.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoSQA code base not found: {path}")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: expected a JSON object {{code: index}}")
    codes = [None] * len(mapping)
    for code, index in mapping.items():
        if not isinstance(index, int) or not 0 <= index < len(codes) or codes[index] is not None:
            raise ValueError(
                f"{path}: index {index!r} is not a unique integer in [0, {len(codes)})"
            )
        codes[index] = code
    return tuple(codes)


def load_cosqa_retrieval(path, code_base=None, limit: int | None = None) -> RetrievalSet:
    """CoSQA retrieval queries (`cosqa-retrieval-*-500.json`) against the code base.

    Args:
      path: JSON list of {doc, code, label, retrieval_idx}.
      code_base: `code_idx_map.txt`; default the file of that name beside `path`.
      limit: Keep the first `limit` queries (the base is always whole).

    Raises:
      FileNotFoundError: Queries or code base missing.
      ValueError: A record without `doc`/`retrieval_idx`, an index outside the base, or a
        gold code that differs from the record's own `code`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Retrieval data file not found: {path}")
    base_path = pathlib.Path(code_base) if code_base else path.parent / COSQA_CODE_BASE
    codes = read_cosqa_code_base(base_path)
    queries, gold, dropped = [], [], 0
    for i, record in enumerate(_read_json_list(path)):
        where = f"{path}[{i}]"
        missing = [k for k in ("doc", "retrieval_idx", "label") if k not in record]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing} of a CoSQA retrieval record")
        if int(record["label"]) != 1:
            dropped += 1  # a label-0 pair says the code does NOT answer the query
            continue
        index = record["retrieval_idx"]
        if not isinstance(index, int) or not 0 <= index < len(codes):
            raise ValueError(f"{where}: retrieval_idx {index!r} outside the {len(codes)}-code base")
        if "code" in record and record["code"] != codes[index]:
            raise ValueError(f"{where}: code differs from {base_path.name}[{index}]")
        queries.append(str(record["doc"]).strip())
        gold.append(index)
        if limit is not None and len(queries) >= limit:
            break
    if not queries:
        raise ValueError(f"{path}: no label-1 queries")
    return RetrievalSet(tuple(queries), codes, np.asarray(gold), str(path), dropped)


def _read_jsonl(path: pathlib.Path) -> list[tuple[str, dict]]:
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    return records


def load_with_code_base(path, code_base, limit: int | None = None) -> RetrievalSet:
    """UniXcoder's layout: queries (`test.jsonl`) matched by `url` to a `codebase.jsonl`.

    Texts and codes are read as `retrieval.load_pairs` reads a record (space-joined tokens).

    Raises:
      FileNotFoundError: Either file missing.
      ValueError: A record without `url`, a duplicate code-base url, or a query url that is
        not in the code base.
    """
    path, base_path = pathlib.Path(path), pathlib.Path(code_base)
    for p in (path, base_path):
        if not p.is_file():
            raise FileNotFoundError(f"Retrieval data file not found: {p}")
    codes, index_of = [], {}
    for where, record in _read_jsonl(base_path):
        if "url" not in record:
            raise ValueError(f"{where}: code-base record without 'url'")
        if record["url"] in index_of:
            raise ValueError(f"{where}: duplicate url {record['url']!r} in the code base")
        index_of[record["url"]] = len(codes)
        codes.append(_code_of(record, where))
    queries, gold = [], []
    for where, record in _read_jsonl(path):
        pair = retrieval.record_to_pair(record, where)
        if pair is None:  # a labelled negative
            continue
        url = record.get("url")
        if url not in index_of:
            raise ValueError(f"{where}: url {url!r} is not in the code base {base_path}")
        if not pair.text:
            raise ValueError(f"{where}: empty text")
        queries.append(pair.text)
        gold.append(index_of[url])
        if limit is not None and len(queries) >= limit:
            break
    if not queries:
        raise ValueError(f"{path}: no queries")
    return RetrievalSet(tuple(queries), tuple(codes), np.asarray(gold), f"{path} vs {base_path}")


def _code_of(record: dict, where: str) -> str:
    for key in ("code_tokens", "function_tokens", "code", "function"):
        if key in record:
            value = record[key]
            return " ".join(value) if isinstance(value, list) else str(value)
    raise ValueError(f"{where}: no code field (code_tokens, function_tokens, code or function)")


def is_cosqa_retrieval_file(path) -> bool:
    """Whether a `.json` list's first record has CoSQA's `retrieval_idx`."""
    path = pathlib.Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    items = _read_json_list(path)
    return bool(items) and isinstance(items[0], dict) and "retrieval_idx" in items[0]


def load_retrieval_set(path, code_base=None, limit: int | None = None) -> RetrievalSet:
    """The retrieval set of a data file, in whichever of the three shapes it is (module doc).

    Raises:
      FileNotFoundError / ValueError: As the loaders; `limit` < 1 is a ValueError.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if is_cosqa_retrieval_file(path):
        return load_cosqa_retrieval(path, code_base, limit)
    if code_base:
        return load_with_code_base(path, code_base, limit)
    return RetrievalSet.from_pairs(retrieval.load_pairs(path, limit=limit), str(path))
