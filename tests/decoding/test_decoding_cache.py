"""The decoding cache: row expansion / beam reordering per leaf, and no wasted dummy pass."""

import re

import jax
import numpy as np
import pytest

from codet5p_jax import families
from codet5p_jax.config import get_preset
from codet5p_jax.decoding import generate as generation
from codet5p_jax.models import build_model, init_params


@pytest.fixture(scope="module", params=[False, True], ids=["unscanned", "scanned"])
def tiny(request):
    cfg = get_preset("tiny", vocab_size=64, scan_layers=request.param)
    model = build_model(cfg)
    params = jax.tree.map(np.asarray, init_params(cfg, jax.random.PRNGKey(0)))
    return cfg, model, params


SPEC = families.get("t5").cache


def make_cache(model, params, batch=2, enc_len=3, max_len=5):
    ids = np.arange(1, 1 + batch * enc_len).reshape(batch, enc_len) % 60 + 3
    mask = np.ones_like(ids, bool)
    encoded = model.apply({"params": params}, ids, mask, method=model.encode)
    dummy = np.zeros((batch, max_len), np.int32)
    _, v = model.apply(
        {"params": params}, encoded, mask, dummy, decode=True, mutable=["cache"],
        method=model.decode,
    )  # fmt: skip
    return v["cache"]


def leaves(cache):
    flat = jax.tree_util.tree_leaves_with_path(cache)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def test_repeat_and_gather_touch_only_per_row_leaves(tiny):
    cfg, model, params = tiny
    cache = make_cache(model, params)
    before = leaves(cache)
    repeated = leaves(generation.repeat_cache(cache, 3, SPEC))
    rows = np.array([2, 0, 1, 5, 5, 3])
    gathered = leaves(generation.gather_beams(generation.repeat_cache(cache, 3, SPEC), rows, SPEC))
    for key, x in before.items():
        if key.endswith("['position']") or key.endswith("['key_positions']"):
            np.testing.assert_array_equal(repeated[key], x)
            continue
        # Batch is axis 0 in both layouts: row r of the repeat is prompt r // 3.
        np.testing.assert_array_equal(repeated[key], np.repeat(x, 3, axis=0))
        if "encoder_decoder_attention" in key:
            np.testing.assert_array_equal(gathered[key], repeated[key])
        else:
            np.testing.assert_array_equal(gathered[key], repeated[key][rows])


def test_cache_creation_pass_is_removed_by_xla(tiny):
    """The `[B, max_len]` dummy decoder pass must not survive compilation: only the cached
    steps (one query) attend over the max_len keys."""
    cfg, model, params = tiny
    batch, max_new = 2, 37
    prefill, forced, forced_len = generation._prefix_parts(None, None, batch, 0, 0)
    opts = generation._Options(
        method="greedy", num_return=1, max_new_tokens=max_new, length_penalty=1.0,
        early_stopping=False, temperature=1.0, top_k=0, top_p=1.0, eos_id=cfg.eos_token_id,
        pad_id=0, stop_table=None, cache=SPEC,
    )  # fmt: skip
    ids = np.full((batch, 4), 5, np.int32)
    hlo = (
        generation._generate_jit.lower(
            model,
            opts,
            params,
            ids,
            ids > 0,
            prefill,
            np.int32(prefill.shape[1]),
            forced,
            forced_len,
            np.int32(max_new),
            jax.random.PRNGKey(0),
        )  # fmt: skip
        .compile()
        .as_text()
    )
    dot_shapes = re.findall(r"f32\[([0-9,]+)\]\S* (?:dot|convolution)\(", hlo)
    assert dot_shapes, "no matmuls found: HLO format changed?"
    max_len = 1 + max_new - 1
    for shape in dot_shapes:
        dims = [int(d) for d in shape.split(",")]
        # Allowed: [B, N, 1, max_len] scores of a one-token step. Forbidden: max_len queries.
        assert not (max_len in dims and dims.index(max_len) < len(dims) - 1), shape
