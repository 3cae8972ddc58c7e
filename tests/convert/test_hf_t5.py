"""The T5 rule table covers every preset exactly: HF side vs transformers, JAX side vs Flax."""

import flax.linen as nn
import flax.traverse_util as traverse_util
import jax
import numpy as np
import pytest
import torch
import transformers

from codet5p_jax.config import PRESETS, T5Config, to_hf_config
from codet5p_jax.convert import hf_t5
from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.models import build_model, init_args

TIED = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
_HF_FIELDS = [
    "vocab_size",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_heads",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "feed_forward_proj",
]


def _hf_meta_shapes(cfg: T5Config) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the HF (released) model of `cfg`, built on the meta device (no memory)."""
    hf = to_hf_config(cfg)
    kwargs = {k: hf[k] for k in _HF_FIELDS}
    with torch.device("meta"):
        if cfg.has_decoder:
            t5 = transformers.T5ForConditionalGeneration(
                transformers.T5Config(num_decoder_layers=cfg.num_decoder_layers, **kwargs)
            )
        else:
            t5 = transformers.T5EncoderModel(transformers.T5Config(**kwargs))
        heads = {"proj": cfg.embed_dim, "itm_head": 2 if cfg.has_itm_head else None}
        state = dict(t5.state_dict())
        for name, features in heads.items():
            if features:
                linear = torch.nn.Linear(cfg.emb_dim, features)
                state.update({f"{name}.{k}": v for k, v in linear.state_dict().items()})
    return {k: tuple(v.shape) for k, v in state.items() if k not in TIED}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_rule_table_matches_transformers_layout(name):
    cfg = PRESETS[name]
    table = hf_t5.rule_table(cfg)
    assert {r.hf: r.hf_shape for r in table.rules} == _hf_meta_shapes(cfg)
    # Every tied copy HF may store points at the shared table.
    assert set(table.tied.values()) == {"shared.weight"}


@pytest.mark.parametrize("scan_layers", [False, True], ids=["unscanned", "scanned"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_rule_table_matches_flax_param_tree(name, scan_layers):
    cfg = PRESETS[name].replace(scan_layers=scan_layers)
    model = build_model(cfg)
    abstract = jax.eval_shape(lambda r: model.init(r, *init_args(cfg)), jax.random.PRNGKey(0))
    flat = traverse_util.flatten_dict(nn.unbox(abstract["params"]), sep="/")
    assert hf_t5.expected_shapes(cfg) == {k: tuple(v.shape) for k, v in flat.items()}


def _tiny_state(cfg: T5Config, seed=0):
    rng = np.random.default_rng(seed)
    table = hf_t5.rule_table(cfg)
    return {r.hf: rng.standard_normal(r.hf_shape).astype(np.float32) for r in table.rules}


def test_relative_bias_is_read_from_block_zero_only():
    cfg = PRESETS["tiny"]
    state = _tiny_state(cfg)
    params = hf_t5.hf_to_params(state, cfg)
    bias = state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    np.testing.assert_array_equal(params["encoder"]["relpos_bias"]["rel_embedding"], bias.T)
    state["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = bias
    with pytest.raises(ConversionError, match="unexpected key 'encoder.block.1.layer.0"):
        hf_t5.hf_to_params(state, cfg)


def test_old_hf_unused_cross_attention_bias_is_ignored():
    cfg = PRESETS["tiny"]
    state = _tiny_state(cfg)
    reference = hf_t5.hf_to_params(state, cfg)
    state[hf_t5._UNUSED_CROSS_BIAS] = np.zeros((32, 4), np.float32)
    params = hf_t5.hf_to_params(state, cfg)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, reference))


def test_hf_to_params_keeps_source_dtype():
    cfg = PRESETS["tiny"]
    state = {k: v.astype(np.float16) for k, v in _tiny_state(cfg).items()}
    params = hf_t5.hf_to_params(state, cfg)
    assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float16)}


def test_params_to_hf_rejects_layout_that_contradicts_config():
    cfg = PRESETS["tiny"]
    params = hf_t5.hf_to_params(_tiny_state(cfg), cfg.replace(scan_layers=True))
    with pytest.raises(ConversionError, match="params are scanned but scan_layers=False"):
        hf_t5.params_to_hf(params, cfg)


def test_check_params_names_missing_and_misshapen_params():
    cfg = PRESETS["tiny"]
    params = hf_t5.hf_to_params(_tiny_state(cfg), cfg)
    hf_t5.check_params(params, cfg)  # the exact tree passes
    del params["encoder"]["encoder_norm"]
    params["decoder"]["decoder_norm"]["scale"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as err:
        hf_t5.check_params(params, cfg, source="ckpt")
    message = str(err.value)
    assert "missing param 'encoder/encoder_norm/scale' (shape (64,))" in message
    assert "shape mismatch for 'decoder/decoder_norm/scale': expected (64,), got (3,)" in message
