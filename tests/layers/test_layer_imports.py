"""`codet5p_jax/layers` reads no model config: of our package it imports only `dtypes`.

A layer takes explicit dimensions; only a family's network module (models/) reads its config.
"""

import ast
import pathlib

import pytest

import codet5p_jax.layers

LAYERS_DIR = pathlib.Path(codet5p_jax.layers.__file__).parent
ALLOWED = ("codet5p_jax.dtypes", "codet5p_jax.layers")


def _our_imports(path: pathlib.Path) -> list[str]:
    """Absolute names of every `codet5p_jax` module or name imported by `path`."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against codet5p_jax.layers
                base = ".".join(["codet5p_jax", "layers"][: 2 - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names += [f"{module}.{alias.name}" for alias in node.names]
    return [n for n in names if n == "codet5p_jax" or n.startswith("codet5p_jax.")]


@pytest.mark.parametrize("path", sorted(LAYERS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_layer_imports_only_dtypes(path):
    allowed = lambda n: any(n == a or n.startswith(a + ".") for a in ALLOWED)  # noqa: E731
    bad = [n for n in _our_imports(path) if not allowed(n)]
    assert not bad, f"{path.name} imports {bad}; layers may import only codet5p_jax.dtypes"


def test_the_check_sees_a_config_import(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("from codet5p_jax.config import T5Config\nfrom .. import config\n")
    assert _our_imports(src) == ["codet5p_jax.config.T5Config", "codet5p_jax.config"]
