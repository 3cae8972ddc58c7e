"""Whole-model parity with HF `transformers` (random init, torch CPU, fp32): tolerance 1e-4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from codet5p_jax.config import PRESETS, from_hf_config, to_hf_config
from codet5p_jax.convert.hf_t5 import hf_to_params
from codet5p_jax.models import build_model, decoder_only_inputs

ATOL = 1e-4

# Unequal depths, head_dim != emb_dim / num_heads, non-default buckets, and the 32103 vocab.
HF_CONFIGS = {
    "unequal_depths": dict(
        vocab_size=300,
        d_model=48,
        num_heads=3,
        d_kv=20,
        d_ff=96,
        num_layers=3,
        num_decoder_layers=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
    ),
    "deeper_decoder": dict(
        vocab_size=32103,
        d_model=32,
        num_heads=4,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=3,
    ),
}


def _hf_model(name, **extra):
    torch.manual_seed(0)
    hf_cfg = transformers.T5Config(dropout_rate=0.0, **HF_CONFIGS[name], **extra)
    return transformers.T5ForConditionalGeneration(hf_cfg).eval()


def _state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _padded_batch(vocab, batch=3, enc_len=40, dec_len=23, seed=0):
    rng = np.random.RandomState(seed)
    enc = rng.randint(5, vocab, (batch, enc_len))
    mask = np.ones_like(enc)
    mask[1, 30:] = 0
    mask[2, 6:] = 0
    enc = enc * mask  # pad id 0 in the padded tail
    dec = rng.randint(5, vocab, (batch, dec_len))
    return enc, mask, dec


def _hf_forward(hf, enc, mask, dec, **kwargs):
    with torch.no_grad():
        return hf(
            input_ids=torch.tensor(enc),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(dec),
            **kwargs,
        )


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
@pytest.mark.parametrize("scan_layers", [False, True])
def test_logits_and_encoder_states_match_hf(name, scan_layers):
    hf = _hf_model(name)
    cfg = from_hf_config(hf.config.to_dict()).replace(scan_layers=scan_layers)
    params = hf_to_params(_state(hf), cfg)
    enc, mask, dec = _padded_batch(cfg.vocab_size)
    out = _hf_forward(hf, enc, mask, dec)
    model = build_model(cfg)
    variables = {"params": params}
    logits = model.apply(variables, jnp.asarray(enc), jnp.asarray(dec), jnp.asarray(mask))
    encoded = model.apply(variables, jnp.asarray(enc), jnp.asarray(mask), method=model.encode)
    np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        np.asarray(encoded), out.encoder_last_hidden_state.numpy(), atol=ATOL, rtol=0
    )


def test_cached_decoding_matches_teacher_forcing():
    hf = _hf_model("unequal_depths")
    cfg = from_hf_config(hf.config.to_dict())
    params = hf_to_params(_state(hf), cfg)
    enc, mask, dec = _padded_batch(cfg.vocab_size, dec_len=9)
    model = build_model(cfg)
    encoded = model.apply({"params": params}, jnp.asarray(enc), method=model.encode)
    full = model.apply(
        {"params": params}, encoded, jnp.asarray(mask), jnp.asarray(dec), method=model.decode
    )
    decode = lambda cache, tokens: model.apply(  # noqa: E731
        {"params": params, "cache": cache} if cache else {"params": params},
        encoded,
        jnp.asarray(mask),
        jnp.asarray(tokens),
        decode=True,
        mutable=["cache"],
        method=model.decode,
    )
    _, state = decode(None, np.zeros_like(dec))
    # A 4-token prefill, then one token at a time.
    steps, state = decode(state["cache"], dec[:, :4])
    outputs = [steps]
    for t in range(4, dec.shape[1]):
        step, state = decode(state["cache"], dec[:, t : t + 1])
        outputs.append(step)
    np.testing.assert_allclose(np.concatenate(outputs, 1), np.asarray(full), atol=1e-5, rtol=0)


def test_decoder_only_mode_matches_hf_with_clm_encoder_input():
    hf = _hf_model("deeper_decoder")
    cfg = from_hf_config(hf.config.to_dict())
    params = hf_to_params(_state(hf), cfg)
    _, _, dec = _padded_batch(cfg.vocab_size)
    enc, mask = decoder_only_inputs(3)
    with torch.no_grad():
        expected = hf(input_ids=torch.full((3, 1), 3), decoder_input_ids=torch.tensor(dec)).logits
    model = build_model(cfg)
    got = model.apply({"params": params}, enc, jnp.asarray(dec), mask)
    np.testing.assert_allclose(np.asarray(got), expected.numpy(), atol=ATOL, rtol=0)


def _torch_heads(d_model, embed_dim, with_itm):
    torch.manual_seed(1)
    proj = torch.nn.Linear(d_model, embed_dim)
    itm = torch.nn.Linear(d_model, 2) if with_itm else None
    return proj, itm


def test_embedding_model_matches_t5_encoder_plus_linear():
    torch.manual_seed(0)
    hf_cfg = transformers.T5Config(dropout_rate=0.0, **HF_CONFIGS["unequal_depths"])
    encoder = transformers.T5EncoderModel(hf_cfg).eval()
    proj, _ = _torch_heads(hf_cfg.d_model, 16, with_itm=False)
    state = _state(encoder) | {
        f"proj.{k}": v.detach().numpy() for k, v in proj.state_dict().items()
    }
    hf_dict = hf_cfg.to_dict() | {"model_type": "codet5p_embedding", "embed_dim": 16}
    cfg = from_hf_config(hf_dict)
    params = hf_to_params(state, cfg)
    enc, mask, _ = _padded_batch(cfg.vocab_size)
    with torch.no_grad():
        hidden = encoder(input_ids=torch.tensor(enc), attention_mask=torch.tensor(mask))
        expected = torch.nn.functional.normalize(proj(hidden.last_hidden_state[:, 0]), dim=-1)
    model = build_model(cfg)
    got = model.apply({"params": params}, jnp.asarray(enc), jnp.asarray(mask), method=model.embed)
    np.testing.assert_allclose(np.asarray(got), expected.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(got), axis=-1), 1.0, atol=1e-6)


def test_bimodal_heads_match_torch_reference():
    hf = _hf_model("unequal_depths")
    proj, itm = _torch_heads(hf.config.d_model, 16, with_itm=True)
    state = _state(hf)
    state |= {f"proj.{k}": v.detach().numpy() for k, v in proj.state_dict().items()}
    state |= {f"itm_head.{k}": v.detach().numpy() for k, v in itm.state_dict().items()}
    cfg = from_hf_config(hf.config.to_dict() | {"model_type": "codet5p_bimodal", "embed_dim": 16})
    assert cfg.kind == "bimodal"
    params = hf_to_params(state, cfg)
    enc, mask, dec = _padded_batch(cfg.vocab_size)
    out = _hf_forward(hf, enc, mask, dec, output_hidden_states=True)
    with torch.no_grad():
        text_vec = torch.nn.functional.normalize(proj(out.encoder_last_hidden_state[:, 0]), dim=-1)
        itm_logits = itm(out.decoder_hidden_states[-1][:, -1])
    model = build_model(cfg)
    variables = {"params": params}
    encoded = model.apply(variables, jnp.asarray(enc), jnp.asarray(mask), method=model.encode)
    hidden = model.apply(
        variables,
        encoded,
        jnp.asarray(mask),
        jnp.asarray(dec),
        return_hidden=True,
        method=model.decode,
    )
    got_vec = model.apply(variables, jnp.asarray(enc), jnp.asarray(mask), method=model.embed)
    got_itm = model.apply(variables, hidden[:, -1], method=model.itm_logits)
    np.testing.assert_allclose(np.asarray(got_vec), text_vec.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(got_itm), itm_logits.numpy(), atol=ATOL, rtol=0)


# bfloat16 keeps 8 significant bits: each rounding is off by at most u = 2**-9 relative. Inputs,
# weights and every block's activations are rounded, and the errors add up through the 3 + 2
# blocks and the tied logits; 8u (1.6%) bounds the RMS error relative to the RMS of the fp32 HF
# logits (measured: 0.7%). A model that ignored `dtype` would be 1e-6 off, hence the dtype checks.
BF16_RMS_RTOL = 8 * 2.0**-9


def test_bf16_compute_keeps_float32_logits():
    hf = _hf_model("unequal_depths")
    cfg = from_hf_config(hf.config.to_dict()).replace(dtype="bfloat16")
    params = hf_to_params(_state(hf), cfg)
    enc, mask, dec = _padded_batch(cfg.vocab_size)
    expected = _hf_forward(hf, enc, mask, dec).logits.numpy()
    model = build_model(cfg)
    variables = {"params": params}
    enc, mask, dec = jnp.asarray(enc), jnp.asarray(mask), jnp.asarray(dec)
    logits = model.apply(variables, enc, dec, mask)
    encoded = model.apply(variables, enc, mask, method=model.encode)
    hidden = model.apply(variables, encoded, mask, dec, return_hidden=True, method=model.decode)
    assert params["encoder"]["encoder_norm"]["scale"].dtype == np.float32  # storage stays fp32
    assert encoded.dtype == hidden.dtype == jnp.bfloat16  # the blocks really run in bf16
    assert logits.dtype == jnp.float32
    # The float32 island: logits are the bf16 decoder states, rescaled by d_model**-0.5 and
    # multiplied by the float32 embedding in float32 (float64 here), not a bf16 product cast up.
    # CPUs compute float32 dots exactly; GPUs run a bf16 model's dots, this one included, at the
    # backend default (TF32, see test_matmul_precision.py), which 1e-5 does not cover.
    if jax.default_backend() == "cpu":
        table = np.asarray(params["token_embedder"]["embedding"], np.float64)
        island = np.asarray(hidden, np.float64) * cfg.emb_dim**-0.5 @ table.T
        np.testing.assert_allclose(np.asarray(logits), island, atol=1e-5, rtol=0)
    error = np.asarray(logits) - expected
    relative_rms = np.sqrt(np.mean(error**2) / np.mean(expected**2))
    assert relative_rms < BF16_RMS_RTOL, relative_rms


# The released HF configs (../shared/reference/CODET5P_FACTS.md §3.1-3.3): d_model, d_ff,
# encoder / decoder layers, heads, d_kv, vocab_size, embed_dim. All six share 32 buckets, max
# distance 128, epsilon 1e-6, relu, tied embeddings and pad / bos / eos ids 0 / 1 / 2.
RELEASED = {
    "codet5p-220m": ("t5", 768, 3072, 12, 12, 12, 64, 32100, None),
    "codet5p-220m-py": ("t5", 768, 3072, 12, 12, 12, 64, 32100, None),
    "codet5p-770m": ("t5", 1024, 4096, 24, 24, 16, 64, 32100, None),
    "codet5p-770m-py": ("t5", 1024, 4096, 24, 24, 16, 64, 32100, None),
    "codet5p-110m-embedding": ("codet5p_embedding", 768, 3072, 12, None, 12, 64, 32103, 256),
    "codet5p-220m-bimodal": ("codet5p_bimodal", 768, 3072, 12, 12, 12, 64, 32103, 256),
}
RELEASED_COMMON = dict(
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=0,
)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_presets_have_released_shapes(name):
    model_type, d_model, d_ff, enc, dec, heads, d_kv, vocab, embed_dim = RELEASED[name]
    want = dict(
        RELEASED_COMMON,
        model_type=model_type,
        d_model=d_model,
        d_ff=d_ff,
        num_layers=enc,
        num_heads=heads,
        d_kv=d_kv,
        vocab_size=vocab,
    )
    if dec is not None:
        want["num_decoder_layers"] = dec
    if embed_dim is not None:
        want["embed_dim"] = embed_dim
    hf = to_hf_config(PRESETS[name])
    assert {k: hf.get(k) for k in want} == want
    assert ("num_decoder_layers" in hf) == (dec is not None)
    assert ("embed_dim" in hf) == (embed_dim is not None)
    # And the released config reads back as the preset.
    assert from_hf_config(want) == PRESETS[name].replace(name="custom")


def test_unsupported_hf_configs_are_rejected():
    with pytest.raises(ValueError, match="feed_forward_proj"):
        from_hf_config(
            HF_CONFIGS["unequal_depths"] | {"model_type": "t5", "feed_forward_proj": "gated-gelu"}
        )
    with pytest.raises(ValueError, match="Unsupported model_type"):
        from_hf_config({"model_type": "codegen"})
