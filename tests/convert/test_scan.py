"""Scanned <-> unscanned layouts are exact inverses and agree with `np.stack`."""

import jax
import numpy as np
import pytest

from codet5p_jax.config import PRESETS
from codet5p_jax.convert import hf_t5
from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.convert.scan import is_scanned, scan_params, unscan_params


def _params(name="tiny-bimodal"):
    cfg = PRESETS[name]
    rng = np.random.default_rng(0)
    state = {
        r.hf: rng.standard_normal(r.hf_shape).astype(np.float32)
        for r in hf_t5.rule_table(cfg).rules
    }
    return cfg, hf_t5.hf_to_params(state, cfg)


def _bit_equal(a, b):
    same = jax.tree.map(lambda x, y: x.dtype == y.dtype and x.tobytes() == y.tobytes(), a, b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(jax.tree.leaves(same))


@pytest.mark.parametrize("name", ["tiny", "tiny-bimodal", "codet5p-110m-embedding"])
def test_scan_then_unscan_is_bit_exact(name):
    cfg = PRESETS[name].replace(num_encoder_layers=3, emb_dim=8, head_dim=2, mlp_dim=16)
    cfg = cfg.replace(vocab_size=20, num_heads=2)
    rng = np.random.default_rng(1)
    state = {
        r.hf: rng.standard_normal(r.hf_shape).astype(np.float32)
        for r in hf_t5.rule_table(cfg).rules
    }
    params = hf_t5.hf_to_params(state, cfg)
    scanned = scan_params(params, cfg)
    assert is_scanned(scanned) and not is_scanned(params)
    assert "layers_0" not in scanned["encoder"]
    assert _bit_equal(unscan_params(scanned, cfg), params)


def test_scanned_leaf_is_the_stack_of_block_leaves():
    cfg, params = _params()
    scanned = scan_params(params, cfg)
    got = scanned["decoder"]["layers"]["self_attention"]["query"]["kernel"]
    blocks = [params["decoder"][f"layers_{i}"]["self_attention"]["query"]["kernel"] for i in (0, 1)]
    np.testing.assert_array_equal(got, np.stack(blocks))
    # Stack-level params (relative bias, final norm) and heads are not stacked.
    assert scanned["decoder"]["relpos_bias"] is params["decoder"]["relpos_bias"]
    assert scanned["embedding_proj"] is params["embedding_proj"]


def test_hf_to_params_scanned_holds_block_i_at_index_i():
    """The scanned conversion, leaf by leaf, against the unscanned one (itself checked against
    HF torch in tests/networks): `layers/<path>[i]` is `layers_<i>/<path>` bit for bit, for every
    block of both stacks; stack-level params and heads are the unscanned ones."""
    cfg, params = _params()
    rng = np.random.default_rng(0)
    state = {
        r.hf: rng.standard_normal(r.hf_shape).astype(np.float32)
        for r in hf_t5.rule_table(cfg).rules
    }
    direct = hf_t5.hf_to_params(state, cfg.replace(scan_layers=True))
    assert sorted(direct) == sorted(params)
    for stack, depth in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        assert depth > 1
        blocks = [params[stack][f"layers_{i}"] for i in range(depth)]
        block_names = {f"layers_{i}" for i in range(depth)}
        assert set(direct[stack]) == {"layers"} | (set(params[stack]) - block_names)
        stacked = dict(jax.tree_util.tree_leaves_with_path(direct[stack]["layers"]))
        for i, block in enumerate(blocks):
            for path, leaf in jax.tree_util.tree_leaves_with_path(block):
                got = np.asarray(stacked[path])
                assert got.shape == (depth, *leaf.shape), (stack, path)
                name = f"{stack}/layers_{i}{jax.tree_util.keystr(path)}"
                assert got[i].dtype == leaf.dtype and got[i].tobytes() == leaf.tobytes(), name
        others = {k: v for k, v in params[stack].items() if not k.startswith("layers_")}
        assert _bit_equal({k: v for k, v in direct[stack].items() if k != "layers"}, others)
    heads = [k for k in params if k not in ("encoder", "decoder")]
    assert _bit_equal({k: direct[k] for k in heads}, {k: params[k] for k in heads})
    back = hf_t5.params_to_hf(direct, cfg.replace(scan_layers=True))
    assert all(back[k].tobytes() == v.tobytes() for k, v in state.items())


def test_unscan_rejects_wrong_layer_count():
    cfg, params = _params()
    scanned = scan_params(params, cfg)
    with pytest.raises(ConversionError, match=r"leading axis of shape \(2, 64, 4, 16\) is not"):
        unscan_params(scanned, cfg.replace(num_decoder_layers=3))


def test_scan_rejects_missing_block():
    cfg, params = _params()
    del params["encoder"]["layers_1"]
    with pytest.raises(
        ConversionError, match=r"Cannot scan encoder: missing blocks \['layers_1'\]"
    ):
        scan_params(params, cfg)
