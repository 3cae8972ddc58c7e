"""Corpus preparation: readers, dedup, split, skip counts, errors, cache reuse."""

import hashlib
import json
import os
import pathlib

import pytest
from testlib import PY_SOURCE, STDLIB_FILES

from tasks import corpus_cache as C
from tasks import corpus_sources as S

CSN = "reference/datasets/codesearchnet/python"


def _spec(name, path, kind="directory", **kw):
    return C.CorpusSpec(name=name, kind=kind, path=str(path), **kw)


def test_tree_reader_counts_every_bad_file(source_tree):
    counts = S.Counter()
    recs = list(S.iter_source_tree(source_tree, counts))
    assert sorted(r["path"] for r in recs) == [
        "a.py",
        "dup.py",
        "lib/A.java",
        "lib/main.go",
        "web/app.js",
    ]
    assert {r["language"] for r in recs} == {"python", "java", "go", "javascript"}
    assert dict(counts) == {
        "unknown_language": 1,
        "undecodable": 1,
        "empty": 1,
        "binary": 1,
        "unreadable": 1,
    }
    assert len(list(S.iter_source_tree(source_tree, S.Counter(), max_files=2))) == 2


def test_prepare_dedups_splits_and_records_stats(source_tree):
    spec = _spec("tree_split", source_tree, validation_fraction=0.5)
    stats = json.loads((C.prepare_corpus(spec) / "stats.json").read_text())
    assert stats["duplicates"]["code"] == 1  # dup.py == a.py up to whitespace
    assert stats["skipped"]["undecodable"] == 1 and stats["skipped"]["unknown_language"] == 1
    # The split is a pure function of the relative path (sha1 below fraction * 2^32).
    kept = ["a.py", "lib/A.java", "lib/main.go", "web/app.js"]
    val = [p for p in kept if int(hashlib.sha1(p.encode()).hexdigest()[:8], 16) < 0.5 * 2**32]
    assert stats["records"]["code"] == {"validation": len(val), "train": len(kept) - len(val)}
    # Two (function, docstring) pairs from a.py; the docstring-only function is dropped.
    assert sum(stats["records"]["pairs"].values()) == 2


def test_python_pairs_drop_the_docstring():
    pairs = list(S.python_function_pairs(PY_SOURCE, "a.py", S.Counter()))
    by_name = {p["code"].split("(")[0]: p for p in pairs}
    join = by_name["def join_all"]
    assert join["docstring"] == "Join path parts with a separator."
    assert '"""' not in join["code"] and "return sep.join(out)" in join["code"]
    walk = by_name["def walk"]
    assert walk["code"].startswith("def walk(self, root):\n    for")  # dedented method
    counts = S.Counter()
    assert list(S.python_function_pairs("def f(:\n", "x.py", counts)) == []
    assert counts["unparsable_python"] == 1


def test_cache_is_reused_and_keyed_by_spec(source_tree):
    spec = _spec("tree_reuse", source_tree)
    first = C.prepare_corpus(spec)
    mtime = os.stat(first / "stats.json").st_mtime_ns
    assert C.prepare_corpus(spec) == first
    assert os.stat(first / "stats.json").st_mtime_ns == mtime
    assert _spec("tree_reuse", source_tree, max_files=1).directory() != first


def test_force_rebuilds_an_existing_cache(tmp_path, source_tree):
    """The cache is keyed by the spec, not the files: `force` (`prepare-corpus --force`) is how
    an edited corpus is read again; it must replace the old copy, leaving nothing beside it."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text(PY_SOURCE)
    spec = _spec("tree_force", tree)
    out = C.prepare_corpus(spec)
    assert json.loads((out / "stats.json").read_text())["records"]["code"] == {
        "train": 1, "validation": 0,
    }  # fmt: skip
    (tree / "b.go").write_text("package main\n\nfunc main() {}\n")
    assert C.prepare_corpus(spec) == out  # reused as it is
    assert sum(json.loads((out / "stats.json").read_text())["records"]["code"].values()) == 1
    assert C.prepare_corpus(spec, force=True) == out
    assert sum(json.loads((out / "stats.json").read_text())["records"]["code"].values()) == 2
    assert [p.name for p in out.parent.iterdir() if out.name in p.name] == [out.name]


def test_empty_and_missing_corpora_fail_clearly(tmp_path, source_tree):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nothing usable"):
        C.prepare_corpus(_spec("empty_dir", tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.py").write_bytes(b"\xff\xfe\xfa")
    (bad / "y.txt").write_text("hello")
    with pytest.raises(ValueError, match="undecodable"):
        C.prepare_corpus(_spec("bad_dir", bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.prepare_corpus(_spec("missing_dir", tmp_path / "nope"))
    # Nothing half-written is left behind.
    leftovers = [p.name for p in (C.cache_root() / "corpora").iterdir()]
    assert not any(
        n.startswith((".empty_dir", "empty_dir", ".bad_dir", "bad_dir")) for n in leftovers
    )
    with pytest.raises(ValueError, match="kind"):
        C.CorpusSpec(name="x", kind="zip", path="/tmp")
    with pytest.raises(ValueError, match="a-z0-9"):
        C.CorpusSpec(name="Bad-Name", kind="directory", path="/tmp")


def test_code_jsonl_skips_bad_lines(tmp_path):
    path = tmp_path / "code.jsonl"
    lines = [
        json.dumps({"code": "def f():\n    return 1\n", "language": "python"}),
        json.dumps({"code_tokens": ["int", "x", "=", "1", ";"]}),
        json.dumps({"language": "go"}),  # missing code
        "{not json",
        json.dumps([1, 2]),  # not an object
        "",
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"code": "\xff\xfe"}\n')
    counts = S.Counter()
    recs = list(S.iter_code_jsonl(path, counts))
    assert [r["code"] for r in recs] == ["def f():\n    return 1\n", "int x = 1 ;"]
    assert dict(counts) == {"missing_field": 1, "bad_json": 2, "undecodable": 1}
    stats = json.loads((C.prepare_corpus(_spec("jl", path, "jsonl")) / "stats.json").read_text())
    assert sum(stats["records"]["code"].values()) == 2 and stats["skipped"]["bad_json"] == 2


def test_codesearchnet_pairs(shared_dir, tmp_path):
    path = shared_dir / CSN / "csn_codexglue_hf_dummy.jsonl"
    counts = S.Counter()
    pairs = list(S.iter_pairs_jsonl(path, counts))
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(pairs) == len(raw) == 9 and not counts
    assert [p["docstring"] for p in pairs] == [r["docstring"] for r in raw]
    # Token-only records (CodeXGLUE style) are joined with spaces; half-empty ones skipped.
    tok = tmp_path / "tok.jsonl"
    tok.write_text(
        json.dumps({"code_tokens": ["def", "f", "(", ")"], "docstring_tokens": ["Do", "it"]})
        + "\n"
        + json.dumps({"code": "x = 1", "docstring": ""})
        + "\n"
    )
    counts = S.Counter()
    got = list(S.iter_pairs_jsonl(tok, counts))
    assert [(g["code"], g["docstring"]) for g in got] == [("def f ( )", "Do it")]
    assert counts["missing_field"] == 1


def test_stdlib_corpus(stdlib_spec):
    stats = C.load_stats(stdlib_spec)
    assert stats["source"] == str(C.stdlib_dir())
    files = sum(stats["records"]["code"].values()) + stats["duplicates"].get("code", 0)
    assert files == STDLIB_FILES
    assert stats["records"]["pairs"]["train"] > 100
    paths = C.corpus_files(stdlib_spec, "code", "train")
    assert all(pathlib.Path(p).is_file() for p in paths)
    with pytest.raises(ValueError, match="unknown stream"):
        C.corpus_files(stdlib_spec, "images", "train")
