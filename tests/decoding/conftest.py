"""Fixtures of the decoding tests: `pair` is `testlib.make_pair` (an HF torch T5 and the same
weights in JAX, redrawn so that greedy decoding varies and ends)."""

import pytest
from testlib import make_pair


@pytest.fixture(scope="session")
def pair():
    return make_pair
