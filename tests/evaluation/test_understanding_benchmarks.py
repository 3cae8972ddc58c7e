"""The CodeXGLUE benchmarks of `run_benchmark` (defect, clone-bcb, clone-poj104, completion-*)
on the format fixtures with stub model callbacks; completion scores against an independent
rewrite of CodeXGLUE's line-completion evaluator."""

import json
import re

import numpy as np
import pytest

from codet5p_jax.evaluation import benchmarks
from codet5p_jax.evaluation.results_io import read_jsonl

FIXTURES = "reference/datasets/codexglue-understanding"


@pytest.fixture(scope="module")
def fixtures(shared_dir):
    return shared_dir / FIXTURES


def test_defect_accuracy_and_files(fixtures, tmp_path):
    seen = []

    def classify_fn(inputs):
        seen.extend(inputs)
        return [1, 0][: len(inputs)]

    metrics = benchmarks.run_benchmark(
        "defect", classify_fn, tmp_path, path=str(fixtures / "defect-detection"), split="test"
    )
    # test.txt = [3, 2]; all fixture labels are 0: the second prediction (0) is right.
    assert metrics["accuracy"] == 50.0 and metrics["num_examples"] == 2
    functions = json.loads((fixtures / "defect-detection" / "function.json").read_text())
    assert seen == [" ".join(functions[3]["func"].split()), " ".join(functions[2]["func"].split())]
    rows = [r for _, r in read_jsonl(tmp_path / "samples_results.jsonl")]
    assert [(r["idx"], r["label"], r["prediction"]) for r in rows] == [(3, 0, 1), (2, 0, 0)]
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == 50.0


def test_clone_bcb_precision_recall_f1(fixtures, tmp_path):
    def classify_fn(pairs):
        assert all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
        return [1] * len(pairs)

    metrics = benchmarks.run_benchmark(
        "clone-bcb",
        classify_fn,
        tmp_path,
        path=str(fixtures / "clone-detection-bigclonebench"),
        split="test",
    )
    # test.txt labels 0, 1, 0; all predicted 1: P = 1/3, R = 1, F1 = 0.5.
    assert metrics["precision"] == pytest.approx(100 / 3)
    assert metrics["recall"] == 100.0 and metrics["f1"] == pytest.approx(50.0)


def test_clone_poj104_map_at_r(fixtures, tmp_path):
    path = str(fixtures / "clone-detection-poj104")
    labels_seen = []

    def by_problem(texts):
        # A perfect embedder: one axis per problem (looked up from the texts' order).
        labels_seen.extend(texts)
        return np.repeat(np.eye(3), 2, axis=0)

    metrics = benchmarks.run_benchmark("clone-poj104", by_problem, tmp_path, path=path, split="all")
    assert metrics["map_at_r"] == 100.0 and metrics["num_problems"] == 3
    # A constant embedder ties everything: corpus order ranks program 0 (or, for query 0,
    # program 1) first, so only the two queries of problem 1 score: MAP@R = 2/6.
    constant = lambda texts: np.ones((len(texts), 4))  # noqa: E731
    metrics = benchmarks.run_benchmark(
        "clone-poj104", constant, tmp_path / "c", path=path, split="all"
    )
    assert metrics["map_at_r"] == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="embed_fn must return"):
        benchmarks.run_benchmark(
            "clone-poj104", lambda t: np.ones(3), tmp_path / "x", path=path, split="all"
        )


# ---------------------------------------------------------------------------- line completion
def _evaluator_post_process(code):
    """CodeXGLUE CodeCompletion-line evaluator's `post_process`, rewritten for the test."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    for kind, value in re.findall(r"<(STR|NUM|CHAR)_LIT:(.*?)>", code, re.S):
        code = code.replace(f"<{kind}_LIT:{value}>", value)
    return code


def _fuzz_ratio(a, b):
    """fuzzywuzzy `fuzz.ratio` (python-Levenshtein): int(round(100 * 2 * LCS / (|a| + |b|)))."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    row = [0] * (len(b) + 1)
    for ch in a:
        diag = 0
        for j, other in enumerate(b, start=1):
            diag, row[j] = row[j], diag + 1 if ch == other else max(row[j], row[j - 1])
    return int(round(100 * 2 * row[-1] / (len(a) + len(b))))


def _evaluator(preds, gts):
    em = sim = 0
    for pred, gt in zip(preds, gts, strict=True):
        pred, gt = _evaluator_post_process(pred.strip()), _evaluator_post_process(gt)
        sim += _fuzz_ratio(pred, gt)
        em += pred.split() == gt.split()
    return 100 * em / len(gts), sim / len(gts)


CASES = [
    # (gt, generated text): the prediction is the text up to its first <EOL>.
    ("return x", "return x <EOL> print ( x )"),
    ("x = <NUM_LIT>", "x = 0"),  # the literal placeholder is restored to 0 on both sides
    ('s = "<STR_LIT:hello>"', 's = "hello" </s>'),
    ("for i in range ( n ) :", "for i in range ( m ) :"),
    ("self . a = a ", "self . a = a"),  # EM by tokens, edit similarity on the raw strings
    ("if ok :", ""),  # an empty prediction
    ("", ""),
]


@pytest.mark.parametrize("benchmark", ["completion-py150", "completion-javacorpus"])
def test_completion_equals_the_codexglue_evaluator(tmp_path, benchmark):
    data = tmp_path / "test.json"
    data.write_text(
        "".join(
            json.dumps({"input": f"<s> a{i} <EOL>", "gt": gt}) + "\n"
            for i, (gt, _) in enumerate(CASES)
        )  # fmt: skip
    )
    outputs = {f"<s> a{i} <EOL>": text for i, (_, text) in enumerate(CASES)}

    def generate_fn(prompts, num_samples, **kw):
        return [[outputs[p]] for p in prompts]

    metrics = benchmarks.run_benchmark(benchmark, generate_fn, tmp_path / "out", path=str(data))
    preds = [text.split("<EOL>")[0].split("</s>")[0] for _, text in CASES]
    em, edit_sim = _evaluator(preds, [gt for gt, _ in CASES])
    assert metrics["exact_match"] == pytest.approx(em)
    assert metrics["edit_sim"] == pytest.approx(edit_sim)
    # Cases 0, 1, 2, 4 and 6 match by tokens (5 of 7).
    assert em == pytest.approx(500 / 7)


def test_completion_fixture_and_directory_path(fixtures, tmp_path):
    folder = fixtures / "code-completion-line-python"
    metrics = benchmarks.run_benchmark(
        "completion-py150", lambda p, n, **k: [[""] for _ in p], tmp_path, path=str(folder)
    )
    # The dummy records' gt is empty: an empty prediction matches (EM 100, fuzz.ratio 100).
    assert metrics == {**metrics, "exact_match": 100.0, "edit_sim": 100.0, "num_examples": 5}


def test_bad_benchmark_inputs(fixtures, tmp_path):
    with pytest.raises(ValueError, match="needs a data file"):
        benchmarks.run_benchmark("defect", lambda x: x, tmp_path)
    with pytest.raises(ValueError, match="classify_fn must return 2 labels"):
        benchmarks.run_benchmark(
            "defect", lambda x: [0], tmp_path, path=str(fixtures / "defect-detection")
        )
