"""CodeBLEU (`codegen_metrics.codebleu`): the `codebleu` package on tree-sitter 0.26.

References: the package's README example, the CodeBLEU paper's §3.4 Example 2, a case whose four
components are each 0 by inspection, identical codes (100) on the CodeSearchNet samples of every
`rag-<lang>` language, and `codebleu.calc_codebleu` called directly on the same strings.
"""

import importlib.metadata
import json
import sys

import pytest

from codet5p_jax.evaluation import codegen_metrics, rag_benchmark

CSN = "reference/datasets/codesearchnet/{}/csn_codexglue_hf_dummy.jsonl"


def _csn_codes(shared_dir, language):
    path = shared_dir / CSN.format(language)
    return [" ".join(json.loads(x)["code_tokens"]) for x in path.read_text().splitlines()]


def test_runs_on_the_projects_tree_sitter():
    # The point of the --no-deps install: codebleu 0.7.0 asks for tree-sitter<0.23.
    assert importlib.metadata.version("codebleu") == "0.7.0"
    assert importlib.metadata.version("tree-sitter") == "0.26.1"


def test_readme_example():
    # codebleu 0.7.0 README: 0.5537 / 0.1041 / 0.1109 / 1.0 / 1.0 (4 digits, truncated).
    got = codegen_metrics.codebleu(
        ["def sum ( first , second ) :\n return second + first"],
        ["def add ( a , b ) :\n return a + b"],
        "python",
    )
    expected = {
        "codebleu": 55.37,
        "ngram_match": 10.41,
        "weighted_ngram_match": 11.09,
        "syntax_match": 100.0,
        "dataflow_match": 100.0,
    }
    assert got == pytest.approx(expected, abs=0.01)


def test_paper_example_2_renamed_variable():
    # CodeBLEU paper §3.4, Example 2 (text): BLEU 0.7571, CodeBLEU 0.8804; renaming d -> c keeps
    # every AST subtree and every data-flow edge.
    reference = (
        "public static int Sign ( double d ) { return ( int ) ( ( d == 0 ) ? 0 : ( d < 0 ) ? -1 "
        ": 1 ) ; }"
    )
    got = codegen_metrics.codebleu([reference], [reference.replace(" d ", " c ")], "java")
    assert got["ngram_match"] == pytest.approx(75.71, abs=0.01)
    assert got["syntax_match"] == 100.0 and got["dataflow_match"] == 100.0
    assert got["codebleu"] == pytest.approx(88.04, abs=0.01)


def test_nothing_in_common_scores_the_dataflow_quarter_only():
    # No shared token (n-gram and weighted n-gram 0), the prediction parses to no subtree of the
    # reference (syntax 0), and `pass` has no data flow: the package reports 0 and counts it as 1
    # in the sum, so CodeBLEU = 0.25 * (0 + 0 + 0 + 1).
    got = codegen_metrics.codebleu(
        ["def test ( ) :\n pass"], ["some random words in length more than 3"], "python"
    )
    assert got == {
        "codebleu": 25.0,
        "ngram_match": 0.0,
        "weighted_ngram_match": 0.0,
        "syntax_match": 0.0,
        "dataflow_match": 0.0,
    }


@pytest.mark.parametrize("language", rag_benchmark.LANGUAGES)
def test_identical_codes_score_100(shared_dir, language):
    codes = _csn_codes(shared_dir, language)
    got = codegen_metrics.codebleu(codes, codes, language)
    assert got == {key: 100.0 for key in got}
    # Real code: the AST and data-flow parts are not the degenerate "nothing found" case.
    shorter = [" ".join(c.split()[: len(c.split()) * 2 // 3]) for c in codes]
    partial = codegen_metrics.codebleu(codes, shorter, language)
    assert 0 < partial["syntax_match"] < 100 and 0 < partial["dataflow_match"] < 100


@pytest.mark.parametrize("language", ["python", "php"])
def test_equals_the_package_called_directly(shared_dir, language):
    from codebleu import calc_codebleu

    codes = _csn_codes(shared_dir, language)
    predictions = codes[1:] + codes[:1]
    got = codegen_metrics.codebleu(codes, predictions, language)
    if language == "php":  # the documented `<?php ` tag on both sides
        codes, predictions = (["<?php " + c for c in x] for x in (codes, predictions))
    direct = calc_codebleu(codes, predictions, lang=language)
    assert got == {k.removesuffix("_score"): 100 * v for k, v in direct.items()}


def test_php_without_the_tag_would_not_parse_as_php(shared_dir):
    from codebleu import calc_codebleu

    codes = _csn_codes(shared_dir, "php")
    shorter = [" ".join(c.split()[:10]) for c in codes]
    untagged = calc_codebleu(codes, shorter, lang="php")
    assert untagged["syntax_match_score"] == 1.0 and untagged["dataflow_match_score"] == 0
    assert codegen_metrics.codebleu(codes, shorter, "php")["syntax_match"] < 100


def test_bad_requests(monkeypatch):
    with pytest.raises(ValueError, match="as many predictions"):
        codegen_metrics.codebleu(["a"], [], "python")
    with pytest.raises(ValueError, match="CodeBLEU has no language 'cobol'"):
        codegen_metrics.codebleu(["a"], ["a"], "cobol")
    with pytest.raises(ValueError, match="CodeBLEU for rust: .*tree-sitter-rust"):
        codegen_metrics.codebleu(["fn f() {}"], ["fn f() {}"], "rust")  # grammar not installed
    monkeypatch.setitem(sys.modules, "codebleu", None)
    with pytest.raises(ValueError, match="pip install --no-deps -r requirements-nodeps.txt"):
        codegen_metrics.codebleu(["a"], ["a"], "python")
