"""`pyproject.toml` declares what `requirements.txt` pins; an sdist installs into a bare venv."""

import pathlib
import re
import subprocess
import sys
import tomllib
import venv

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = pathlib.Path(__file__).resolve().parents[1]


def _pins(file: pathlib.Path) -> dict[str, str]:
    pins = {}
    for line in file.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_runtime_dependencies_are_the_pinned_ones_as_ranges():
    pins = _pins(REPO / "requirements.txt")
    declared = {canonicalize_name(r.name): r for r in map(Requirement, _project()["dependencies"])}
    assert set(declared) == set(pins)
    for name, version in pins.items():
        assert declared[name].specifier.contains(version), (name, version, declared[name])


def test_extras_name_the_accelerator_runtimes_and_the_test_pins():
    extras = _project()["optional-dependencies"]
    assert set(extras) >= {"tpu", "cuda", "dev"}
    jax_pin = _pins(REPO / "requirements.txt")["jax"]
    for extra, jax_extra in (("tpu", {"tpu"}), ("cuda", {"cuda12"})):
        (req,) = map(Requirement, extras[extra])
        assert req.name == "jax" and req.extras == jax_extra and req.specifier.contains(jax_pin)
    dev_pins = _pins(REPO / "requirements-dev.txt")
    for req in map(Requirement, extras["dev"]):
        assert req.specifier.contains(dev_pins[canonicalize_name(req.name)]), req
    assert 'pip install -e ".[tpu]"' in (REPO / "README.md").read_text()


@pytest.mark.slow
def test_sdist_installs_every_runtime_dependency_into_a_fresh_venv(tmp_path):
    """Minutes: pip fetches TensorFlow & co. (from its cache when it has them)."""
    dist = tmp_path / "dist"
    build = (
        f"import sys; from setuptools import build_meta as b; print(b.build_sdist({str(dist)!r}))"
    )
    made = subprocess.run([sys.executable, "-c", build], cwd=REPO, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-3000:]
    sdist = dist / made.stdout.strip().splitlines()[-1]
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin/python"), "-m", "pip"]
    # Constrained to the tested pins, so the check is about what the sdist declares.
    install = subprocess.run(
        [*pip, "install", "-q", str(sdist), "-c", str(REPO / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([*pip, "list", "--format=freeze"], capture_output=True, text=True)
    installed = {canonicalize_name(x.split("==")[0]) for x in listed.stdout.splitlines()}
    missing = set(_pins(REPO / "requirements.txt")) - installed
    assert not missing
    helped = subprocess.run(
        [str(env_dir / "bin/codet5p"), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert re.search(r"\btrain\b", helped.stdout) and re.search(r"\bconvert\b", helped.stdout)
