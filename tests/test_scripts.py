"""Shell entry points name modules and commands that exist (demo.sh, the GPU session, CI)."""

import importlib.util
import pathlib
import re

import pytest

from codet5p_jax.cli import COMMANDS

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ["scripts/demo.sh", "scripts/test.sh", "benchmarks/gpu_session.sh", ".ci/run"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_run_existing_modules_and_commands(script):
    text = (REPO / script).read_text()
    for module, rest in re.findall(r"-m (codet5p_jax[\w.]*)((?: [\w-]+)?)", text):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:  # a package
            spec = importlib.util.find_spec(f"{module}.__main__")
        assert spec is not None, f"{script}: python -m {module} is not runnable"
        if module == "codet5p_jax.cli":
            assert rest.strip() in COMMANDS, f"{script}: unknown command {rest.strip()!r}"
    for command in re.findall(r"codet5p ([a-z][\w-]*)", text):
        assert command in COMMANDS, f"{script}: codet5p {command} is no command"
