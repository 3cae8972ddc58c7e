"""The import contracts of pyproject.toml hold, and a wrong import breaks them.

The contracts (`[tool.importlinter]`) are the layering the code is built on: commands on top,
then evaluation, the façade and the trainer, decoding, the one loader, checkpointing, the family
registry, objectives and conversion tables, networks, and at the bottom layers that read no
model config. A scratch copy with one upward import shows the check can fail.
"""

import os
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
LINT = pathlib.Path(sys.executable).with_name("lint-imports")


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    for name in ("codet5p_jax", "tasks"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    norms = tmp_path / "codet5p_jax" / "layers" / "norms.py"
    norms.write_text(norms.read_text() + "\nfrom codet5p_jax.cli import gin_flags  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "codet5p_jax.layers.norms -> codet5p_jax.cli" in result.stdout
