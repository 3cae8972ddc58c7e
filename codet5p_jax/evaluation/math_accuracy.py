"""Execution accuracy for MathQA-Python / GSM8K-Python style programs.

A generated program is run in the sandbox and must leave a global `answer`; the sample is correct
when `answer` (a number, or a numeric string such as "1,200") lies within `tolerance` of the gold
number. GSM8K's gold is the number after the final `####` of its `answer` field (Cobbe et al.
2021; commas are thousands separators). The tolerance is ours (1e-4, absolute); PAL uses 1e-3.
"""

import os
from collections.abc import Sequence

from codet5p_jax.evaluation import execution_results, results_io, sandbox

DEFAULT_TOLERANCE = 1e-4


def parse_gsm8k_answer(answer_text: str) -> float:
    """The gold number of a GSM8K `answer` field ("... #### 1,200" → 1200.0).

    Raises:
        ValueError: no `####` marker or the text after it is not a number.
    """
    if "####" not in answer_text:
        raise ValueError(f"GSM8K answer has no '####' marker: {answer_text[-80:]!r}")
    gold = answer_text.rsplit("####", 1)[1].strip().replace(",", "")
    try:
        return float(gold)
    except ValueError:
        raise ValueError(f"GSM8K gold answer is not a number: {gold!r}") from None


def load_gsm8k(path: str | os.PathLike) -> list[dict]:
    """Reads GSM8K JSONL (`question`, `answer`) into [{"task_id", "question", "gold"}].

    task_id is "gsm8k/<line index>" (0-based over non-blank lines).

    Raises:
        ValueError: a line lacks `question`/`answer` or its gold cannot be parsed.
    """
    problems = []
    for line, record in results_io.read_jsonl(path):
        for field in ("question", "answer"):
            if not isinstance(record.get(field), str):
                raise ValueError(f"{path}, line {line}: missing string field {field!r}")
        try:
            gold = parse_gsm8k_answer(record["answer"])
        except ValueError as e:
            raise ValueError(f"{path}, line {line}: {e}") from None
        problems.append(
            {"task_id": f"gsm8k/{len(problems)}", "question": record["question"], "gold": gold}
        )
    return problems


def is_correct(value: float | None, gold: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """True when the program's `answer` is a number within `tolerance` of `gold`."""
    return value is not None and abs(value - gold) <= tolerance


def score_math_programs(
    samples: Sequence[dict],
    golds: dict[str, float],
    ks: Sequence[int] = (1,),
    *,
    config: sandbox.SandboxConfig | None = None,
    n_workers: int = 4,
    tolerance: float = DEFAULT_TOLERANCE,
    benchmark: str = "gsm8k-python",
) -> execution_results.EvaluationResult:
    """Runs each sample's program and compares its `answer` with the gold number.

    Args:
        samples: dicts with task_id, completion_id, completion (the program).
        golds: task_id → gold number.
        ks: the ks of pass@k (pass@1 over one greedy sample is the execution accuracy).
        config: sandbox limits.
        n_workers: parallel programs.
        tolerance: absolute tolerance of the comparison.
        benchmark: name recorded in the metrics.

    Raises:
        ValueError: a sample's task_id has no gold.
    """
    unknown = sorted({s["task_id"] for s in samples} - golds.keys())
    if unknown:
        raise ValueError(f"unknown task_id(s): {unknown[:5]}")
    config = config or sandbox.SandboxConfig()
    outcomes = sandbox.run_programs(
        [s["completion"] for s in samples], config, n_workers=n_workers, report_variable="answer"
    )
    rows = []
    for sample, outcome in zip(samples, outcomes, strict=True):
        gold = golds[sample["task_id"]]
        correct = outcome.passed and is_correct(outcome.value, gold, tolerance)
        if not outcome.passed:
            result = outcome.result
        elif outcome.value is None:
            result = f"failed: no numeric `answer` (got {outcome.value_repr})"
        else:
            result = "passed" if correct else f"failed: answer {outcome.value!r} != gold {gold!r}"
        rows.append({**sample, "gold": gold, "answer": outcome.value, "passed": correct})
        rows[-1]["result"] = result
    return execution_results.aggregate(
        rows, ks, benchmark=benchmark, timeout=config.timeout, tolerance=tolerance
    )
