"""Fixtures of tests/convert: one tiny released-style HF checkpoint per CodeT5+ T5-family kind."""

import pytest
from testlib import KINDS, build_reference, write_hf_dir


@pytest.fixture(scope="module", params=KINDS)
def hf_source(request, tmp_path_factory):
    """(kind, HF dir, TorchReference) for each kind, written once per test module."""
    ref = build_reference(request.param)
    path = write_hf_dir(ref, tmp_path_factory.mktemp("src") / f"tiny-{request.param}")
    return request.param, path, ref
