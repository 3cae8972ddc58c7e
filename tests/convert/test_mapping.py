"""Transforms against the HF computation they mirror, and strict key accounting."""

import numpy as np
import pytest

from codet5p_jax.convert import mapping
from codet5p_jax.convert.mapping import ConversionError, Rule, RuleTable

N, H, D, B, L = 3, 5, 7, 2, 4


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_split_heads_in_matches_torch_linear_then_view():
    # HF T5: q = Linear(D, N*H)(x).view(B, L, N, H), i.e. x @ W.T with head-major rows of W.
    w, x = _rand(N * H, D), _rand(B, L, D, seed=1)
    kernel = mapping.split_heads_in(N, H).to_jax(w)
    assert kernel.shape == (D, N, H)
    ref = (x @ w.T).reshape(B, L, N, H)
    np.testing.assert_allclose(np.einsum("bld,dnh->blnh", x, kernel), ref, rtol=1e-5, atol=1e-5)


def test_split_heads_out_matches_torch_linear_on_concatenated_heads():
    # HF T5: o = Linear(N*H, D)(heads.reshape(B, L, N*H)).
    w, heads = _rand(D, N * H), _rand(B, L, N, H, seed=1)
    kernel = mapping.split_heads_out(N, H).to_jax(w)
    assert kernel.shape == (N, H, D)
    ref = heads.reshape(B, L, N * H) @ w.T
    np.testing.assert_allclose(np.einsum("blnh,nhd->bld", heads, kernel), ref, rtol=1e-5, atol=1e-5)


def test_transpose_matches_torch_linear():
    w, x = _rand(D, N), _rand(B, N, seed=1)  # torch Linear(N, D).weight is [D, N]
    np.testing.assert_allclose(x @ mapping.TRANSPOSE.to_jax(w), x @ w.T, rtol=1e-6)


@pytest.mark.parametrize(
    "transform, shape",
    [
        (mapping.split_heads_in(N, H), (N * H, D)),
        (mapping.split_heads_out(N, H), (D, N * H)),
        (mapping.TRANSPOSE, (D, N)),
        (mapping.IDENTITY, (D,)),
    ],
)
def test_transforms_invert_bit_exactly(transform, shape):
    x = _rand(*shape)
    back = transform.to_hf(transform.to_jax(x))
    assert back.dtype == x.dtype and back.tobytes() == x.tobytes()


TABLE = RuleTable(
    (
        Rule("emb.weight", "embedder/embedding", (4, 3), (4, 3)),
        Rule("lin.weight", "dense/kernel", (2, 3), (3, 2), mapping.TRANSPOSE),
    ),
    tied={"lm_head.weight": "emb.weight"},
    ignorable={"old.bias": "unused"},
)


def _state():
    return {"emb.weight": _rand(4, 3), "lin.weight": _rand(2, 3, seed=1)}


def test_tied_copy_and_ignorable_keys_are_consumed():
    state = _state()
    flat = mapping.apply_hf_to_jax(
        {**state, "lm_head.weight": state["emb.weight"].copy(), "old.bias": _rand(2)}, TABLE
    )
    assert sorted(flat) == ["dense/kernel", "embedder/embedding"]
    back = mapping.apply_jax_to_hf(flat, TABLE)
    assert sorted(back) == ["emb.weight", "lin.weight"]  # tied copies are not written
    for key, value in state.items():
        assert back[key].tobytes() == value.tobytes()


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s.pop("lin.weight"), "missing key 'lin.weight' (shape (2, 3))"),
        (lambda s: s.update(extra=_rand(5)), "unexpected key 'extra' (shape (5,))"),
        (
            lambda s: s.update({"lin.weight": _rand(3, 2)}),
            "shape mismatch for 'lin.weight': expected (2, 3), got (3, 2)",
        ),
        (
            lambda s: s.update({"lm_head.weight": _rand(4, 3, seed=9)}),
            "'lm_head.weight' should be a tied copy of 'emb.weight' but differs",
        ),
    ],
)
def test_hf_to_jax_names_the_bad_key(change, expected):
    state = _state()
    change(state)
    with pytest.raises(ConversionError) as err:
        mapping.apply_hf_to_jax(state, TABLE, source="ckpt-dir")
    assert "Cannot convert ckpt-dir" in str(err.value) and expected in str(err.value)


def test_hf_to_jax_lists_every_problem_at_once():
    state = _state()
    del state["emb.weight"]
    state["stray"] = _rand(1)
    with pytest.raises(ConversionError, match="2 problem") as err:
        mapping.apply_hf_to_jax(state, TABLE)
    assert "'emb.weight'" in str(err.value) and "'stray'" in str(err.value)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda f: f.pop("dense/kernel"), "missing param 'dense/kernel' (shape (3, 2))"),
        (lambda f: f.update({"dense/bias": _rand(2)}), "unexpected param 'dense/bias'"),
        (
            lambda f: f.update({"dense/kernel": _rand(2, 3)}),
            "shape mismatch for 'dense/kernel': expected (3, 2), got (2, 3)",
        ),
    ],
)
def test_jax_to_hf_names_the_bad_param(change, expected):
    flat = mapping.apply_hf_to_jax(_state(), TABLE)
    change(flat)
    with pytest.raises(ConversionError, match="Cannot convert") as err:
        mapping.apply_jax_to_hf(flat, TABLE)
    assert expected in str(err.value)


def test_duplicate_rules_are_rejected():
    rule = Rule("a", "x", (1,), (1,))
    with pytest.raises(AssertionError, match="Duplicate hf key 'a'"):
        RuleTable((rule, Rule("a", "y", (1,), (1,))))
    with pytest.raises(AssertionError, match="Duplicate jax key 'x'"):
        RuleTable((rule, Rule("b", "x", (1,), (1,))))
