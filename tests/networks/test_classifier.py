"""Classifier heads (kind "classifier") against `transformers` and numpy references (fp32).

* eos_decoder pooling = HF `T5ForSequenceClassification` (CodeT5's defect recipe): same logits
  (1e-4) from the same random weights, and our HF export loads into that class cleanly.
* first / mean pooling and pair inputs: the HF `T5EncoderModel` / `T5Model` states, pooled and fed
  through a numpy copy of `T5ClassificationHead`, give our logits.
"""

import json

import flax.linen
import jax
import numpy as np
import pytest
import torch
import transformers
from testlib import SMALL

from codet5p_jax import families, loading
from codet5p_jax.config import T5Config, from_hf_config, to_hf_config
from codet5p_jax.convert.hf_t5 import hf_to_params
from codet5p_jax.models.classifier import last_eos_index, shift_right

TOL = 1e-4  # whole-model tolerance (CONTRIBUTING)
EOS = 2


def _cfg(pooling="eos_decoder", pair=False, num_labels=3) -> T5Config:
    hf = {**SMALL, "model_type": "t5", "architectures": ["T5ForSequenceClassification"]}
    layers = {} if pooling == "eos_decoder" else {"num_decoder_layers": 0}
    return from_hf_config(hf).replace(
        num_labels=num_labels, pooling=pooling, pair_input=pair, dropout_rate=0.0, **layers
    )


def _tokens(rng, rows=4, length=9):
    """Padded rows ending in `</s>` (row 1 has two of them: the last one counts)."""
    ids = rng.integers(5, SMALL["vocab_size"], size=(rows, length))
    lengths = [length, 6, 3, 8][:rows]
    for r, n in enumerate(lengths):
        ids[r, n - 1] = EOS
        ids[r, n:] = 0
    ids[1, 2] = EOS
    return ids


def _randomized(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


def _hf_classifier(cfg, seed=0):
    hf_cfg = transformers.T5Config(**to_hf_config(cfg))
    return _randomized(transformers.T5ForSequenceClassification(hf_cfg), seed)


def _state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _hf_logits(hf, tokens):
    ids = torch.tensor(tokens)
    return hf(input_ids=ids, attention_mask=(ids != 0).long()).logits.detach().numpy()


def _apply(cfg, params, tokens):
    model = families.build_model(cfg)
    return np.asarray(model.apply({"params": params}, jax.numpy.asarray(tokens)))


def test_eos_decoder_pooling_equals_hf_t5_for_sequence_classification():
    cfg = _cfg()
    hf = _hf_classifier(cfg)
    tokens = _tokens(np.random.default_rng(0))
    # HF wants the same number of </s> in every row: compare row by row.
    want = np.concatenate([_hf_logits(hf, tokens[i : i + 1]) for i in range(4)])
    got = _apply(cfg, hf_to_params(_state(hf), cfg), tokens)
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)


def test_export_loads_in_transformers_t5_for_sequence_classification(tmp_path):
    cfg = _cfg()
    hf = _hf_classifier(cfg, seed=1)
    params = hf_to_params(_state(hf), cfg)
    loading.save(tmp_path / "hf", cfg, params, "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["T5ForSequenceClassification"]
    reloaded, info = transformers.T5ForSequenceClassification.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokens = _tokens(np.random.default_rng(1))[:1]
    want = _hf_logits(hf, tokens)
    got = _hf_logits(reloaded.eval(), tokens)
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    back = loading.load(tmp_path / "hf")
    assert back.config.kind == "classifier" and back.config.num_labels == 3
    np.testing.assert_allclose(_apply(back.config, back.params, tokens), want, atol=TOL)


def _np_head(state, prefix, x):
    """numpy `T5ClassificationHead` (eval): out_proj(tanh(dense(x)))."""
    h = np.tanh(x @ state[f"{prefix}dense.weight"].T + state[f"{prefix}dense.bias"])
    return h @ state[f"{prefix}out_proj.weight"].T + state[f"{prefix}out_proj.bias"]


def _encoder_pooled(encoder, tokens, pooling):
    mask = tokens != 0
    states = (
        encoder(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(int)))
        .last_hidden_state.detach()
        .numpy()
    )
    if pooling == "first":
        return states[:, 0]
    return (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


@pytest.mark.parametrize("pooling", ["first", "mean"])
@pytest.mark.parametrize("pair", [False, True])
def test_encoder_pooling_and_pairs_equal_hf_encoder_plus_numpy_head(pooling, pair):
    cfg = _cfg(pooling, pair, num_labels=2)
    hf_cfg = transformers.T5Config(**{**to_hf_config(cfg), "num_decoder_layers": 0})
    encoder = _randomized(transformers.T5EncoderModel(hf_cfg), seed=2)
    rng = np.random.default_rng(2)
    d = cfg.emb_dim
    d_in = 2 * d if pair else d
    head = {
        "classification_head.dense.weight": rng.normal(size=(d, d_in)).astype(np.float32),
        "classification_head.dense.bias": rng.normal(size=(d,)).astype(np.float32),
        "classification_head.out_proj.weight": rng.normal(size=(2, d)).astype(np.float32),
        "classification_head.out_proj.bias": rng.normal(size=(2,)).astype(np.float32),
    }
    state = {f"transformer.{k}": v for k, v in _state(encoder).items()} | head
    params = hf_to_params(state, cfg)
    tokens = _tokens(rng)
    pooled = _encoder_pooled(encoder, tokens, pooling)
    if pair:
        tokens = tokens.reshape(2, 2, -1)  # rows (0, 1) and (2, 3) are the two pairs
        pooled = pooled.reshape(2, 2 * d)
    want = _np_head(state, "classification_head.", pooled)
    np.testing.assert_allclose(_apply(cfg, params, tokens), want, rtol=TOL, atol=TOL)


def test_pair_classifier_with_the_codet5_recipe_equals_hf_t5model_plus_numpy_head():
    cfg = _cfg("eos_decoder", pair=True, num_labels=2)
    hf = _hf_classifier(cfg.replace(pair_input=False), seed=3)  # the same T5Model weights
    state = _state(hf)
    rng = np.random.default_rng(3)
    d = cfg.emb_dim
    state["classification_head.dense.weight"] = rng.normal(size=(d, 2 * d)).astype(np.float32)
    tokens = _tokens(rng)
    vectors = []
    for row in tokens:
        ids = torch.tensor(row[None])
        out = hf.transformer(
            input_ids=ids, attention_mask=(ids != 0).long(), decoder_input_ids=hf._shift_right(ids)
        )
        vectors.append(out.last_hidden_state[0, np.nonzero(row == EOS)[0][-1]].detach().numpy())
    want = _np_head(state, "classification_head.", np.stack(vectors).reshape(2, 2 * d))
    got = _apply(cfg, hf_to_params(state, cfg), tokens.reshape(2, 2, -1))
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)


def test_documented_layout_round_trips(tmp_path):
    cfg = _cfg("mean", pair=True, num_labels=2)
    model = families.build_model(cfg)
    boxed = model.init(jax.random.key(0), *families.init_args(cfg))["params"]
    params = jax.tree.map(np.asarray, flax.linen.unbox(boxed))
    loading.save(tmp_path / "hf", cfg, params, "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["CodeT5pForSequenceClassification"]
    assert (config["pooling"], config["pair_input"], config["num_labels"]) == ("mean", True, 2)
    back = loading.load(tmp_path / "hf")
    assert (back.config.pooling, back.config.pair_input, back.config.num_decoder_layers) == (
        "mean",
        True,
        0,
    )
    flat = jax.tree_util.tree_leaves_with_path(params)
    back_flat = dict(jax.tree_util.tree_leaves_with_path(back.params))
    for path, value in flat:
        np.testing.assert_array_equal(back_flat[path], value)


def test_shift_right_and_last_eos_index():
    tokens = np.array([[7, 2, 8, 2, 0], [9, 9, 0, 0, 0]], np.int32)
    np.testing.assert_array_equal(shift_right(tokens, 0), [[0, 7, 2, 8, 2], [0, 9, 9, 0, 0]])
    # Row 0: the last </s> (position 3); row 1 has none: its last real token (position 1).
    np.testing.assert_array_equal(last_eos_index(tokens, tokens != 0, EOS), [3, 1])


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"num_labels": 1}, "num_labels >= 2"),
        ({"num_labels": 2, "pooling": "max"}, "Unknown pooling 'max'"),
        ({"num_labels": 2, "pooling": "first"}, "set num_decoder_layers=0"),
        ({"num_labels": 2, "num_decoder_layers": 0}, "needs num_decoder_layers >= 1"),
    ],
)
def test_bad_classifier_configs(fields, message):
    with pytest.raises(ValueError, match=message):
        T5Config(kind="classifier", **fields)
