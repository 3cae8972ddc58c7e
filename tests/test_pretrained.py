"""`codet5p_jax.from_pretrained`: HF and orbax sources, parity with torch, save / reload."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import codet5p_jax
from codet5p_jax.convert.mapping import ConversionError

TOL = 1e-4  # whole-model parity tolerance (CONTRIBUTING)
HF = dict(
    vocab_size=53,
    d_model=20,
    d_kv=6,
    num_heads=4,
    d_ff=24,
    num_layers=3,
    num_decoder_layers=2,
    relative_attention_num_buckets=16,
    relative_attention_max_distance=32,
    feed_forward_proj="relu",
    dropout_rate=0.0,
)
EMBED_DIM = 10


def _randomized(*modules):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            module.eval()
    return modules


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    (model,) = _randomized(transformers.T5ForConditionalGeneration(transformers.T5Config(**HF)))
    path = tmp_path_factory.mktemp("t5") / "hf"
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def embedding_dir(tmp_path_factory):
    """A released-layout `CodeT5p_Embedding` checkpoint (FACTS §3.2) and its torch modules."""
    cfg = transformers.T5Config(**{**HF, "num_decoder_layers": 0})
    encoder, proj = _randomized(
        transformers.T5EncoderModel(cfg), torch.nn.Linear(HF["d_model"], EMBED_DIM)
    )
    path = tmp_path_factory.mktemp("emb") / "hf"
    path.mkdir()
    config = {**HF, "model_type": "codet5p_embedding", "embed_dim": EMBED_DIM}
    config["architectures"] = ["CodeT5p_Embedding"]
    (path / "config.json").write_text(json.dumps(config))
    state = {**encoder.state_dict(), **{f"proj.{k}": v for k, v in proj.state_dict().items()}}
    torch.save(state, path / "pytorch_model.bin")
    return path, encoder, proj


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, HF["vocab_size"], size=(3, 11))
    mask = (np.arange(11)[None] < np.array([[11], [7], [2]])).astype(np.int32)
    dec = rng.integers(3, HF["vocab_size"], size=(3, 6))
    dec[:, 0] = 0
    dec_mask = (np.arange(6)[None] < np.array([[6], [4], [5]])).astype(np.int32)
    return np.where(mask == 1, ids, 0), mask, dec, dec_mask


def test_logits_and_encoder_states_match_transformers(t5_dir):
    path, torch_model = t5_dir
    model = codet5p_jax.from_pretrained(path)
    assert model.config.kind == "t5" and model.config.num_encoder_layers == 3
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(model.params))
    ids, mask, dec, dec_mask = _batch()
    with torch.no_grad():
        out = torch_model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(dec),
            decoder_attention_mask=torch.tensor(dec_mask),
        )
    logits = np.asarray(
        model.logits(ids, dec, attention_mask=mask, decoder_attention_mask=dec_mask)
    )
    real = dec_mask.astype(bool)  # padded decoder positions carry no loss
    np.testing.assert_allclose(logits[real], out.logits.numpy()[real], atol=TOL, rtol=0)
    encoded = np.asarray(model.encode(ids, attention_mask=mask))
    want = out.encoder_last_hidden_state.numpy()
    np.testing.assert_allclose(encoded, want, atol=TOL, rtol=0)
    # Without a mask, `input_ids != pad` is used, which is the same mask here.
    np.testing.assert_allclose(np.asarray(model.encode(ids)), encoded, atol=1e-6, rtol=0)


def test_save_pretrained_round_trips_through_both_formats(t5_dir, tmp_path):
    path, torch_model = t5_dir
    model = codet5p_jax.from_pretrained(path)
    model.save_pretrained(tmp_path / "orbax", format="orbax")
    scanned = codet5p_jax.from_pretrained(tmp_path / "orbax", scan_layers=True)
    scanned.save_pretrained(tmp_path / "hf")
    again = codet5p_jax.from_pretrained(tmp_path / "hf")
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params), strict=True):
        assert a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    ids, mask, dec, _ = _batch()
    with torch.no_grad():
        want = torch_model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(dec),
        ).logits.numpy()
    got = np.asarray(scanned.logits(ids, dec, attention_mask=mask))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    with pytest.raises(ConversionError, match="already exists"):
        model.save_pretrained(tmp_path / "hf")
    with pytest.raises(ConversionError, match="Unknown checkpoint format 'pt'"):
        model.save_pretrained(tmp_path / "new", format="pt")
    assert not (tmp_path / "new").exists()


def test_embed_matches_released_embedding_model(embedding_dir):
    path, encoder, proj = embedding_dir
    model = codet5p_jax.from_pretrained(path)
    assert model.config.kind == "embedding" and model.config.embed_dim == EMBED_DIM
    ids, mask, _, _ = _batch()
    ids[:, 0] = 1  # `[CLS]` / `<s>` first, as the released model expects
    with torch.no_grad():
        hidden = encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        first = hidden.last_hidden_state[:, 0, :]
        want = torch.nn.functional.normalize(proj(first), dim=-1).numpy()
    got = np.asarray(model.embed(ids, attention_mask=mask))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="'embedding' model has no decoder"):
        model.logits(ids, ids)


def test_t5_model_has_no_embedding_head(t5_dir):
    model = codet5p_jax.from_pretrained(t5_dir[0])
    with pytest.raises(ValueError, match="'t5' model has no embedding head"):
        model.embed(np.ones((1, 3), np.int32))


def test_half_precision_checkpoint_is_cast_to_param_dtype(t5_dir, tmp_path):
    path, torch_model = t5_dir
    half = transformers.T5ForConditionalGeneration.from_pretrained(path).half()
    half.save_pretrained(tmp_path / "fp16")
    model = codet5p_jax.from_pretrained(tmp_path / "fp16")
    assert {x.dtype for x in jax.tree.leaves(model.params)} == {jnp.dtype(jnp.float32)}
    want = torch_model.shared.weight.detach().half().float().numpy()
    np.testing.assert_array_equal(np.asarray(model.params["token_embedder"]["embedding"]), want)
    bf16 = codet5p_jax.from_pretrained(path, param_dtype="bfloat16")
    assert bf16.config.param_dtype == "bfloat16"
    assert {x.dtype for x in jax.tree.leaves(bf16.params)} == {jnp.dtype(jnp.bfloat16)}
    ids, mask, dec, _ = _batch()
    assert bf16.logits(ids, dec, attention_mask=mask).dtype == jnp.float32


def test_missing_checkpoint_is_reported(tmp_path):
    with pytest.raises(ConversionError, match="nowhere: no such file or directory"):
        codet5p_jax.from_pretrained(tmp_path / "nowhere")
