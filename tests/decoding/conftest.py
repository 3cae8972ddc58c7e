"""Paired random models for decoding parity: an HF torch T5 and the same weights in JAX.

A freshly initialised HF T5 decodes degenerately (the residual stream is dominated by the input
embedding, so greedy repeats the start token forever), which would make token equality vacuous.
`make_pair` therefore redraws the weights (small embeddings, large projections, unit relative
biases) so that continuations vary and, with a small vocabulary, EOS is actually produced.
"""

import functools

import numpy as np
import pytest
import torch
import transformers

from codet5p_jax.config import get_preset, to_hf_config
from codet5p_jax.convert.hf_t5 import hf_to_params
from codet5p_jax.models import build_model

# Preset structure shrunk to CPU-test size: (emb_dim, num_heads, head_dim, mlp_dim, layers).
SMALL_DIMS = {
    "codet5p-220m": (48, 6, 8, 192, 2),
    "codet5p-770m": (64, 8, 8, 256, 3),
}


@functools.cache
def make_pair(
    preset: str,
    vocab_size: int | None = None,
    scan_layers: bool = False,
    eos_boost=1.3,
    emb_std=1.0,
    seed=0,
):
    """Returns `(hf_model, jax_model, params, cfg)` sharing one set of random weights."""
    emb, heads, head_dim, mlp, layers = SMALL_DIMS[preset]
    overrides = dict(
        emb_dim=emb,
        num_heads=heads,
        head_dim=head_dim,
        mlp_dim=mlp,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
        dropout_rate=0.0,
        scan_layers=scan_layers,
    )
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    cfg = get_preset(preset, **overrides)
    torch.manual_seed(seed)
    hf_cfg = transformers.T5Config(**to_hf_config(cfg))
    hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "shared" in name:
                p.normal_(0.0, emb_std)
                p[cfg.eos_token_id] *= eos_boost  # a larger EOS logit, so hypotheses end
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)
            elif p.ndim == 2:
                p.normal_(0.0, 4.0 / p.shape[1] ** 0.5)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = hf_to_params(state, cfg)
    return hf, build_model(cfg), params, cfg


def hf_generate(hf, input_ids, attention_mask, **kwargs):
    """HF `generate` on numpy inputs; returns the output object (dict form)."""
    with torch.no_grad():
        return hf.generate(
            torch.tensor(np.asarray(input_ids), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(attention_mask), dtype=torch.long),
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )


def padded_prompts(vocab_size: int, batch: int = 3, length: int = 9, seed: int = 0):
    """Random prompts without special ids; row 1 is right-padded, row 2 left-padded."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (batch, length))
    mask = np.ones_like(ids)
    if batch > 1:
        mask[1, length - 3 :] = 0
    if batch > 2:
        mask[2, :2] = 0
    return np.where(mask == 1, ids, 0), mask


@pytest.fixture(scope="session")
def pair():
    return make_pair
