"""MBPP (Austin et al. 2021): problems from a user-given file, prompts and check programs.

Accepted files: `mbpp.jsonl` (fields text, code, task_id, test_setup_code, test_list, ...) and
`sanitized-mbpp.json` (a JSON array with prompt, code, task_id, test_imports, test_list). The
evaluation split is task_ids 11-510 (MBPP README: 1-10 few-shot, 511+ training). The prompt follows
the paper: the task text, then "Your code should pass these tests:" and the asserts.
A sample passes when `completion + setup + asserts` runs to its end in the sandbox.
"""

import json
import os

from etils import epath

from codet5p_jax.evaluation import results_io

TEST_SPLIT = range(11, 511)


def load_problems(path: str | os.PathLike, task_ids=TEST_SPLIT) -> dict[str, dict]:
    """Reads MBPP problems, keyed "mbpp/<task_id>", keeping those whose id is in `task_ids`.

    Each problem: task_id, text, code (reference), setup (imports / setup code), tests (asserts).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a record lacks task_id / text|prompt / test_list (naming the field).
    """
    path = epath.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MBPP file not found: {path}")
    if path.suffix == ".json":
        records = list(enumerate(json.loads(path.read_text()), start=1))
    else:
        records = list(results_io.read_jsonl(path))
    problems = {}
    for where, record in records:
        for field in ("task_id", "test_list"):
            if field not in record:
                raise ValueError(f"{path}, record {where}: missing field {field!r}")
        text = record.get("text", record.get("prompt"))
        if not isinstance(text, str):
            raise ValueError(f"{path}, record {where}: missing field 'text' (or 'prompt')")
        if task_ids is not None and record["task_id"] not in task_ids:
            continue
        setup = record.get("test_setup_code") or "\n".join(record.get("test_imports", []))
        problems[f"mbpp/{record['task_id']}"] = {
            "task_id": f"mbpp/{record['task_id']}",
            "text": text,
            "code": record.get("code", ""),
            "setup": setup,
            "tests": list(record["test_list"]),
        }
    return problems


def build_prompt(problem: dict) -> str:
    """The MBPP paper's prompt for one problem (without few-shot examples)."""
    tests = "\n".join(problem["tests"])
    return (
        f"You are an expert Python programmer, and here is your task: {problem['text']} "
        f"Your code should pass these tests:\n\n{tests}\n"
    )


def build_program(problem: dict, completion: str) -> str:
    """completion, then the setup code, then the asserts."""
    return "\n".join([completion, problem["setup"], *problem["tests"]]) + "\n"
