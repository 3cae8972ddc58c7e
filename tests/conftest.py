"""Shared pytest set-up: 8 fake CPU devices and the path of ../shared reference data."""

import os
import pathlib

# Must happen before JAX is imported anywhere: every test process sees 8 CPU devices, so mesh
# tests can run beside single-device ones (unsharded computations simply use device 0).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("CODET5P_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """The ../shared folder (reference tokenizers, configs and datasets)."""
    if not SHARED.is_dir():
        raise FileNotFoundError(f"../shared not found at {SHARED}; set CODET5P_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def codet5_tokenizer_dir(shared_dir) -> pathlib.Path:
    return shared_dir / "reference" / "tokenizers" / "codet5"


@pytest.fixture(scope="session")
def codegen_tokenizer_dir(shared_dir) -> pathlib.Path:
    return shared_dir / "reference" / "tokenizers" / "codegen"
