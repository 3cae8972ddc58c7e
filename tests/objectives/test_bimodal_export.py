"""A stage-2 checkpoint exported to the 110m-embedding HF layout embeds like the JAX model.

The torch reference is built here from `transformers.T5EncoderModel` + `nn.Linear` +
`F.normalize` (the released `CodeT5pEmbeddingModel` forward, FACTS §3.2), not from project code.
"""

import json

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
import torch
import transformers
from testlib import make_bimodal_batch

from codet5p_jax import loading
from codet5p_jax.config import get_preset
from codet5p_jax.convert.embedding_export import embedding_from_bimodal
from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.models import build_model, init_params
from codet5p_jax.objectives.bimodal import BimodalObjective, strip_objective_params


def _stage2_params(model, cfg, steps: int = 2):
    """A few real stage-2 (contrastive) updates, so the exported weights are trained ones."""
    obj = BimodalObjective(model, queue_size=8, itm_weight=0.0, t2c_weight=0.0, c2t_weight=0.0)
    boxed = obj.init_params(init_params(cfg, jax.random.PRNGKey(0)))
    params, extra = nn.unbox(boxed), nn.unbox(obj.init_extra_state(boxed, jax.random.PRNGKey(1)))
    tx = optax.adamw(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, extra, batch):
        grads, (_, extra) = jax.grad(
            lambda p: obj.loss_fn(p, extra, batch, jax.random.PRNGKey(0)), has_aux=True
        )(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, extra

    for s in range(steps):
        params, opt, extra = step(params, opt, extra, make_bimodal_batch(s))
    return params


def test_export_to_embedding_layout_matches_torch_reference(tmp_path):
    cfg = get_preset("tiny-bimodal")
    model = build_model(cfg)
    params = _stage2_params(model, cfg)
    emb_cfg, emb_params = embedding_from_bimodal(cfg, strip_objective_params(params))
    loading.save(tmp_path / "emb", emb_cfg, jax.device_get(emb_params), "hf")
    hf_config = json.loads((tmp_path / "emb/config.json").read_text())
    assert hf_config["architectures"] == ["CodeT5p_Embedding"]
    assert hf_config["embed_dim"] == cfg.embed_dim

    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "emb/model.safetensors"))
    assert not any(k.startswith(("decoder.", "itm_head", "lm_head")) for k in state)
    t5cfg = transformers.T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.emb_dim,
        d_kv=cfg.head_dim,
        d_ff=cfg.mlp_dim,
        num_layers=cfg.num_encoder_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.relative_attention_num_buckets,
        relative_attention_max_distance=cfg.relative_attention_max_distance,
        feed_forward_proj="relu",
        layer_norm_epsilon=cfg.layer_norm_epsilon,
        dropout_rate=0.0,
    )
    encoder = transformers.T5EncoderModel(t5cfg).eval()
    enc_state = {k: v for k, v in state.items() if not k.startswith("proj.")}
    missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
    assert not unexpected and set(missing) <= {"encoder.embed_tokens.weight"}
    proj = torch.nn.Linear(cfg.emb_dim, cfg.embed_dim)
    proj.load_state_dict({"weight": state["proj.weight"], "bias": state["proj.bias"]})

    rng = np.random.default_rng(0)
    ids = np.zeros((3, 10), np.int64)
    for i, n in enumerate((10, 6, 3)):
        ids[i, :n] = [1, *rng.integers(5, 32000, n - 2), 2]
    with torch.no_grad():
        hidden = encoder(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0)
        ).last_hidden_state
        expected = torch.nn.functional.normalize(proj(hidden[:, 0, :]), dim=-1).numpy()

    got = np.asarray(model.apply({"params": params}, ids.astype(np.int32), method=model.embed))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    from codet5p_jax import from_pretrained

    reloaded = from_pretrained(tmp_path / "emb")
    assert reloaded.config.kind == "embedding"
    np.testing.assert_allclose(np.asarray(reloaded.embed(ids)), expected, rtol=1e-4, atol=1e-4)


def test_export_without_projection_head_is_rejected():
    cfg = get_preset("tiny")
    params = nn.unbox(init_params(cfg, jax.random.PRNGKey(0)))
    with pytest.raises(ConversionError, match="without"):
        embedding_from_bimodal(cfg, params)
