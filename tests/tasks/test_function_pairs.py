"""Stage-2 pairs in nine languages (tasks/function_pairs.py, tree-sitter grammars from PyPI).

Three references: hand counts on small fixture files written for this test (one per language,
each with kept functions and one of every skip reason, commented in the expectations below), the
CodeSearchNet samples of ../shared (their function source and CodeSearchNet's own
`docstring_tokens`), and the `ast` path of `corpus_sources.python_function_pairs` on real
standard-library files (the same pairs, code and text, for Python).
"""

import collections
import json
import pathlib
import re
import sysconfig

import pytest

from tasks import corpus_sources, function_pairs
from tasks.corpus_sources import LANGUAGE_BY_EXTENSION

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "function_pairs"

# file -> (kept (line, first words of the summary), skip counts), counted by reading the files.
HAND_COUNTS = {
    "sample.py": (  # undocumented, "Too short.", docstring-only body
        [(4, "Join a root"), (27, "Create a new")],
        {"functions_python": 5, "no_doc": 1, "short_doc": 1, "no_body": 1},
    ),
    "Sample.java": (  # line comment (not Javadoc), abstract area(), "Too short."
        [(10, "Returns the sum"), (15, "Builds an empty"), (36, "Parses the given")],
        {"functions_java": 6, "no_doc": 1, "no_body": 1, "short_doc": 1},
    ),
    "sample.js": (  # line comment, empty reset() {}; export / arrow / method / object property
        [
            (5, "Adds two numbers"),
            (10, "Doubles every value"),
            (21, "Increments the counter"),
            (31, "Fetches the user"),
        ],
        {"functions_javascript": 6, "no_doc": 1, "no_body": 1},
    ),  # fmt: skip
    "sample.go": (  # undocumented, "Noop.", Empty() {}; a two-line // comment is joined
        [
            (4, "Add returns the"),
            (10, "Scale multiplies every element of the slice"),
            (21, "Close implements io.Closer"),
        ],
        {"functions_go": 6, "no_doc": 1, "short_doc": 1, "no_body": 1},
    ),  # fmt: skip
    "sample.php": (  # line comment, {@inheritDoc}, interface method without body
        [(8, "Formats a price"), (19, "Adds an item")],
        {"functions_php": 5, "no_doc": 1, "short_doc": 1, "no_body": 1},
    ),
    "sample.rb": (  # undocumented, "Short one.", empty method; self.unit is a class's first member
        [(2, "Greets the person"), (8, "Sums all the numbers in the given"), (18, "Builds a unit")],
        {"functions_ruby": 6, "no_doc": 1, "short_doc": 1, "no_body": 1},
    ),
    "sample.c": (  # undocumented, "Tiny."; the prototype is no function definition
        [(4, "Returns the larger"), (11, "Prints a greeting")],
        {"functions_c": 4, "no_doc": 1, "short_doc": 1},
    ),
    "sample.cpp": (  # size() undocumented, nothing() {}; template and // comments accepted
        [(5, "Returns the sum"), (14, "Pushes a value"), (17, "Removes and returns")],
        {"functions_cpp": 5, "no_doc": 1, "no_body": 1},
    ),
    "Sample.cs": (  # plain // comment, abstract Area(); <summary> tags removed, [Obsolete] kept
        [(11, "Adds two integers"), (17, "Creates a calculator"), (29, "Resets the internal")],
        {"functions_c_sharp": 5, "no_doc": 1, "no_body": 1},
    ),
}


def _extract(path: pathlib.Path, language: str | None = None):
    counts = collections.Counter()
    language = language or LANGUAGE_BY_EXTENSION[path.suffix]
    pairs = list(function_pairs.function_pairs(path.read_text(), path.name, language, counts))
    return pairs, counts


def test_nine_languages_are_covered():
    assert set(function_pairs.GRAMMARS) == set(corpus_sources.LANGUAGES)
    assert {LANGUAGE_BY_EXTENSION[pathlib.Path(f).suffix] for f in HAND_COUNTS} == set(
        corpus_sources.LANGUAGES
    )


@pytest.mark.parametrize("name", sorted(HAND_COUNTS))
def test_fixture_pairs_match_hand_counts(name):
    kept, skips = HAND_COUNTS[name]
    pairs, counts = _extract(FIXTURES / name)
    got = [(int(p["path"].rsplit(":", 1)[1]), p["docstring"]) for p in pairs]
    assert [line for line, _ in got] == [line for line, _ in kept]
    for (_, text), (_, start) in zip(got, kept, strict=True):
        assert text.startswith(start), (text, start)
        assert "@param" not in text and "<summary>" not in text and "*" not in text
    assert dict(counts) == skips
    for p in pairs:  # the code is the function, without its doc comment
        assert p["docstring"] not in p["code"]
        assert p["code"] == p["code"].lstrip() or p["code"].startswith(("@", "["))


def test_java_code_keeps_annotations_and_body():
    pairs, _ = _extract(FIXTURES / "Sample.java")
    parse = pairs[-1]["code"]
    assert parse.splitlines()[0] == "@Deprecated"
    assert parse.rstrip().endswith("return Integer.parseInt(text);\n}")


# CodeSearchNet stores the function without its doc comment (Python: with its docstring), so a
# file is rebuilt per record: the docstring as the language's doc comment, then the function.
def _csn_file(language: str, record: dict) -> str:
    doc, code = record["docstring"], record["original_string"]
    if language == "python":
        return code
    if language == "go":
        lines = [x if x.lstrip().startswith("//") else f"// {x}" for x in doc.splitlines()]
        return "package p\n\n" + "\n".join(lines) + "\n" + code + "\n"
    if language == "ruby":
        return "\n".join(f"# {x}" for x in doc.splitlines()) + "\n" + code + "\n"
    block = "/**\n" + "\n".join(f" * {x}" for x in doc.splitlines()) + "\n */\n"
    if language == "java":
        return "class W {\n" + block + code + "\n}\n"
    if language == "php":
        return "<?php\nclass W {\n" + block + code + "\n}\n"
    if code.startswith("function("):  # an anonymous function stored from an object literal
        return "var w = {\n" + block + "f: " + code + "\n};\n"
    return block + code + "\n"


# Hand counts: records kept of the 9 per language, by reading each docstring's summary.
CSN_KEPT = {
    "go": 9,
    "java": 9,
    "javascript": 7,  # '匹配满足规则内容' and '获取输入框值' are one word each
    "php": 4,  # set/get/find are only @param lines, two are {@inheritDoc}
    "ruby": 9,
    "python": 9,
}


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text.lower())


@pytest.mark.parametrize("language", sorted(CSN_KEPT))
def test_codesearchnet_samples(shared_dir, language):
    path = (
        shared_dir / "reference/datasets/codesearchnet" / language / "csn_codexglue_hf_dummy.jsonl"
    )
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 9
    kept = 0
    for record in records:
        counts = collections.Counter()
        source = _csn_file(language, record)
        pairs = list(function_pairs.function_pairs(source, "f", language, counts))
        assert counts[f"functions_{language}"] >= 1 and counts["parse_error"] == 0
        if not pairs:
            assert counts["short_doc"] == 1, (record["func_name"], counts)
            continue
        kept += 1
        pair = pairs[0]
        if language != "python":
            assert pair["code"].strip() == record["original_string"].strip()
        # CodeSearchNet's own tokens of the summary agree with ours up to the shorter one (it
        # keeps a second paragraph for some records, and stops at an inline `{@link` in Java).
        ours, theirs = _words(pair["docstring"]), _words(" ".join(record["docstring_tokens"]))
        n = min(len(ours), len(theirs))
        assert n >= 1 and ours[:n] == theirs[:n], (ours, theirs)
    assert kept == CSN_KEPT[language]


def test_python_tree_sitter_equals_ast_path_on_stdlib():
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    names = ["textwrap.py", "threading.py", "turtle.py", "json/decoder.py", "argparse.py"]
    total = 0
    for name in names:
        source = (root / name).read_text()
        ast_pairs = list(corpus_sources.python_function_pairs(source, name, collections.Counter()))
        ts_pairs, _ = (
            function_pairs.function_pairs(source, name, "python", collections.Counter()),
            0,
        )
        key = lambda p: (p["path"], p["docstring"], p["code"])  # noqa: E731
        assert sorted(map(key, ts_pairs)) == sorted(map(key, ast_pairs)), name
        total += len(ast_pairs)
    assert total > 100


def test_clean_comment_markers():
    raw = "/**\n * Adds {@code a}.\n *\n * @param a x\n */"
    assert function_pairs.clean_comment(raw) == "Adds {@code a}."
    assert function_pairs.clean_comment("/// <summary>Sums.</summary>") == "Sums."
    assert function_pairs.clean_comment("# a\n# b") == "a\nb"
    assert function_pairs.clean_comment("# saved via\n# @logger.add") == "saved via\n@logger.add"


def test_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="no grammar for language 'kotlin'"):
        function_pairs.parser("kotlin")


def test_directory_corpus_gets_pairs_of_every_language(tmp_path, monkeypatch):
    from tasks.corpus_cache import CorpusSpec, load_stats

    monkeypatch.setenv("CODET5P_CACHE_DIR", str(tmp_path / "cache"))
    spec = CorpusSpec(name="nine", kind="directory", path=str(FIXTURES), validation_fraction=0.0)
    stats = load_stats(spec)
    expected = sum(len(kept) for kept, _ in HAND_COUNTS.values())
    assert stats["records"]["pairs"]["train"] == expected
    assert stats["skipped"]["no_doc"] == 8  # one per non-Python fixture (Python's ast path
    # counts no skip reasons)
