"""GSM8K-Python execution accuracy: the real GSM8K test file (../shared), hand-written programs."""

import json

import pytest

from codet5p_jax.evaluation import math_accuracy, sandbox

CONFIG = sandbox.SandboxConfig(timeout=2.0, memory_bytes=512 << 20)


@pytest.fixture(scope="module")
def gsm8k_test(shared_dir):
    return shared_dir / "reference" / "datasets" / "gsm8k" / "test.jsonl"


def test_every_gold_answer_parses(gsm8k_test):
    problems = math_accuracy.load_gsm8k(gsm8k_test)
    assert len(problems) == 1319
    # Golds of the first two problems, read off their "#### 18" / "#### 3" lines.
    assert [p["gold"] for p in problems[:2]] == [18.0, 3.0]
    assert problems[0]["question"].startswith("Janet")


def test_parse_gsm8k_answer():
    assert math_accuracy.parse_gsm8k_answer("so 1,200 - 3\n#### 1,197") == 1197.0
    assert math_accuracy.parse_gsm8k_answer("#### -2.5") == -2.5
    with pytest.raises(ValueError, match="no '####'"):
        math_accuracy.parse_gsm8k_answer("the answer is 4")
    with pytest.raises(ValueError, match="not a number"):
        math_accuracy.parse_gsm8k_answer("#### four")


def test_execution_accuracy_on_real_problems(gsm8k_test):
    problems = math_accuracy.load_gsm8k(gsm8k_test)[:3]
    golds = {p["task_id"]: p["gold"] for p in problems}
    programs = [
        # Janet's ducks: (16 - 3 - 4) * 2 = 18.
        ("gsm8k/0", "eggs = 16 - 3 - 4\nanswer = eggs * 2", True),
        ("gsm8k/0", "answer = '18'", True),  # a numeric string counts
        ("gsm8k/0", "answer = 16 - 3 - 4", False),  # wrong number
        ("gsm8k/0", "result = 18", False),  # no `answer`
        ("gsm8k/0", "answer = [18]", False),  # not a number
        # Robe: 2 + 2 / 2 = 3 (a float 3.0 equals the gold 3).
        ("gsm8k/1", "blue = 2\nwhite = blue / 2\nanswer = blue + white", True),
        ("gsm8k/1", "while True:\n    pass", False),  # times out
        # House flip: 80000 * 2.5 - (80000 + 50000) = 70000.
        ("gsm8k/2", "cost = 80000 + 50000\nanswer = 80000 * 2.5 - cost", True),
        ("gsm8k/2", "import sys\nanswer = 70000\nsys.exit(0)", False),  # early exit
    ]
    samples = [
        {"task_id": t, "completion_id": i, "completion": src}
        for i, (t, src, _) in enumerate(programs)
    ]
    result = math_accuracy.score_math_programs(samples, golds, [1], config=CONFIG, n_workers=2)
    assert [r["passed"] for r in result.samples] == [ok for _, _, ok in programs]
    # pass@1 per problem: 2/5, 1/2, 1/2 correct -> mean of (0.4, 0.5, 0.5).
    assert result.metrics["pass@1"] == pytest.approx((0.4 + 0.5 + 0.5) / 3)
    json.dumps(result.samples)  # rows are JSON-serialisable for the results file


def test_tolerance():
    assert math_accuracy.is_correct(18.00001, 18.0)
    assert not math_accuracy.is_correct(18.001, 18.0)
    assert not math_accuracy.is_correct(None, 18.0)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown task_id"):
        math_accuracy.score_math_programs(
            [{"task_id": "gsm8k/9", "completion_id": 0, "completion": ""}], {"gsm8k/0": 1.0}
        )
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(ValueError, match="line 1: .*no '####'"):
        math_accuracy.load_gsm8k(path)
    path.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="missing string field 'answer'"):
        math_accuracy.load_gsm8k(path)
