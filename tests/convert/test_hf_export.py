"""Exported HF directories load in torch cleanly and reproduce the JAX model (fp32, <= 1e-4)."""

import json
import logging

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from testlib import SMALL, build_reference, write_hf_dir

from codet5p_jax.cli.convert import main
from codet5p_jax.pretrained import from_pretrained

TOL = 1e-4  # whole-model parity tolerance (CONTRIBUTING)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _load_with_warnings(path):
    """`T5ForConditionalGeneration.from_pretrained(path)` + its loading info + warning records."""
    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        model, info = transformers.T5ForConditionalGeneration.from_pretrained(
            path, output_loading_info=True
        )
    finally:
        logger.removeHandler(handler)
    return model.eval(), info, [r.getMessage() for r in handler.records]


def _export(src, tmp_path) -> tuple:
    """SRC -> scanned orbax -> HF, through the CLI; returns (orbax dir, HF dir)."""
    assert main([str(src), str(tmp_path / "orbax"), "--to", "orbax", "--scan"]) == 0
    assert main([str(tmp_path / "orbax"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    return tmp_path / "orbax", tmp_path / "hf"


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, SMALL["vocab_size"], size=(3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # padding in the encoder input
    mask[2, 3:] = 0
    ids = np.where(mask == 1, ids, 0)
    dec = rng.integers(5, SMALL["vocab_size"], size=(3, 5))
    dec[:, 0] = SMALL["decoder_start_token_id"]
    return ids, mask, dec


def _torch_logits(model, ids, mask, dec):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(dec),
        )
    return out.logits.numpy()


def test_transformers_loads_export_without_warnings_and_matches_jax(tmp_path):
    ref = build_reference("t5", seed=3)
    orbax_dir, hf_dir = _export(write_hf_dir(ref, tmp_path / "src"), tmp_path)
    model, info, warnings = _load_with_warnings(hf_dir)
    assert warnings == []
    assert {k: sorted(v) for k, v in info.items()} == {
        "missing_keys": [],
        "unexpected_keys": [],
        "mismatched_keys": [],
        "error_msgs": [],
    }
    ids, mask, dec = _batch()
    jax_logits = np.asarray(from_pretrained(orbax_dir).logits(ids, dec, attention_mask=mask))
    np.testing.assert_allclose(_torch_logits(model, ids, mask, dec), jax_logits, atol=TOL, rtol=0)
    # And the export is the source model, bit for bit.
    np.testing.assert_array_equal(
        _torch_logits(model, ids, mask, dec), _torch_logits(ref.t5, ids, mask, dec)
    )


def test_warning_capture_sees_a_missing_key(tmp_path):
    # Control for the test above: the same capture does report a broken checkpoint.
    ref = build_reference("t5")
    _, hf_dir = _export(write_hf_dir(ref, tmp_path / "src"), tmp_path)
    state = safetensors.torch.load_file(hf_dir / "model.safetensors")
    del state["encoder.final_layer_norm.weight"]
    safetensors.torch.save_file(state, hf_dir / "model.safetensors", metadata={"format": "pt"})
    _, info, warnings = _load_with_warnings(hf_dir)
    assert info["missing_keys"] == {"encoder.final_layer_norm.weight"}
    assert any("encoder.final_layer_norm.weight" in w for w in warnings)


def _torch_from_export(hf_dir, kind):
    """Rebuilds the released torch modules from an exported embedding / bimodal directory."""
    hf = json.loads((hf_dir / "config.json").read_text())
    fields = {k: v for k, v in hf.items() if k in SMALL}
    state = safetensors.torch.load_file(hf_dir / "model.safetensors")
    heads = {"proj": torch.nn.Linear(hf["d_model"], hf["embed_dim"])}
    if kind == "bimodal":
        heads["itm_head"] = torch.nn.Linear(hf["d_model"], 2)
        t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(**fields))
    else:
        t5 = transformers.T5EncoderModel(transformers.T5Config(**fields))
    for name, head in heads.items():
        head.load_state_dict({k: state.pop(f"{name}.{k}") for k in ("weight", "bias")})
    result = t5.load_state_dict(state, strict=False)
    # Only the tied copies of `shared` may be absent (`authorized_missing_keys` of the
    # released classes, plus the tied decoder/lm_head copies); nothing may be left over.
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    assert set(result.missing_keys) <= tied and result.unexpected_keys == []
    assert hf["architectures"] == [
        {"embedding": "CodeT5p_Embedding", "bimodal": "CodeT5pBimodalModel"}[kind]
    ]
    return t5.eval(), heads["proj"].eval(), heads.get("itm_head")


@pytest.mark.parametrize("kind", ["embedding", "bimodal"])
def test_embedding_and_bimodal_exports_reproduce_jax(tmp_path, kind):
    ref = build_reference(kind, seed=5)
    orbax_dir, hf_dir = _export(write_hf_dir(ref, tmp_path / "src"), tmp_path)
    t5, proj, itm_head = _torch_from_export(hf_dir, kind)
    ids, mask, dec = _batch(seed=1)
    pretrained = from_pretrained(orbax_dir)
    encoder = t5 if kind == "embedding" else t5.get_encoder()
    with torch.no_grad():
        hidden = encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        first = hidden.last_hidden_state[:, 0, :]
        want = torch.nn.functional.normalize(proj(first), dim=-1).numpy()
    got = np.asarray(pretrained.embed(ids, attention_mask=mask))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-6)
    if kind == "bimodal":
        jax_logits = np.asarray(pretrained.logits(ids, dec, attention_mask=mask))
        np.testing.assert_allclose(_torch_logits(t5, ids, mask, dec), jax_logits, atol=TOL, rtol=0)
        np.testing.assert_array_equal(
            itm_head.weight.detach().numpy(), ref.itm_head.weight.detach().numpy()
        )
