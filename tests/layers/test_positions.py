"""Relative position buckets and bias vs HF `T5Attention`."""

import jax
import numpy as np
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from codet5p_jax.layers.positions import RelativePositionBias, relative_position_bucket


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (16, 64)])
def test_buckets_match_hf(bidirectional, num_buckets, max_distance):
    rel = np.arange(-600, 601)
    expected = T5Attention._relative_position_bucket(
        torch.tensor(rel), bidirectional, num_buckets, max_distance
    ).numpy()
    got = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(got, expected)


def test_dynamic_offset_matches_static_rows():
    module = RelativePositionBias(
        num_heads=3, num_buckets=8, max_distance=128, bidirectional=False, stddev=12**-0.5
    )
    params = module.init(jax.random.key(0), 5, 5)
    full = module.apply(params, 9, 9)  # teacher-forcing bias over 9 positions
    for offset in (0, 3, 8):
        row = module.apply(params, 1, 9, q_offset=offset)
        np.testing.assert_array_equal(np.asarray(row[0, :, 0]), np.asarray(full[0, :, offset]))
