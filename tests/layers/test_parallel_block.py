"""Parallel residual (GPT-J / CodeGen): the helper vs its formula, and a block built from our
layers (LayerNorm, rotary attention, GPT-J MLP) vs HF `CodeGenBlock`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers.models.codegen import modeling_codegen as hf
from transformers.models.codegen.configuration_codegen import CodeGenConfig

from codet5p_jax.layers.attention import MultiHeadAttention
from codet5p_jax.layers.masks import causal_mask
from codet5p_jax.layers.mlp import GPTJMlp
from codet5p_jax.layers.norms import LayerNorm
from codet5p_jax.layers.residual import parallel_residual

D, N, H, ROT, F = 32, 4, 8, 4, 128  # width, heads, head_dim, rotary_dim, 4 * D


def test_parallel_residual_matches_formula():
    rng = np.random.RandomState(0)
    x, shift = rng.randn(2, 3, 5), rng.randn(5)
    a, b, c = (rng.randn(5, 5) for _ in range(3))
    norm = lambda y: (y - y.mean(-1, keepdims=True)) / y.std(-1, keepdims=True)  # noqa: E731
    got = parallel_residual(
        jnp.asarray(x, jnp.float32),
        lambda y: norm(y) + shift,
        lambda h: h @ a,
        lambda h: jnp.tanh(h @ b),
        lambda h: h @ c,
    )
    h = norm(x) + shift
    expected = x + h @ a + np.tanh(h @ b) + h @ c
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


class _CodeGenStyleBlock(nn.Module):
    """`x + attn(ln_1(x)) + mlp(ln_1(x))` with rotary, scaled scores and causal masking."""

    @nn.compact
    def __call__(self, x, positions):
        attn = MultiHeadAttention(
            num_heads=N, head_dim=H, features=D, score_scale=H**-0.5, rotary_dim=ROT, name="attn"
        )
        mask = causal_mask(x.shape[1])
        self_attention = lambda h: attn(  # noqa: E731
            h, h, mask=mask, q_positions=positions, kv_positions=positions
        )
        mlp = GPTJMlp(features=D, mlp_dim=F, name="mlp")
        return parallel_residual(x, LayerNorm(epsilon=1e-5, name="ln_1"), self_attention, mlp)


def _from_hf(block) -> dict:
    """Our params from an HF `CodeGenBlock` (the test's own copy of the mp_num=4 layout)."""
    t = lambda p: p.detach().numpy().T  # noqa: E731  torch Linear [out, in] -> [in, out]
    # qkv_proj output columns are [mp=4, (q | v | k), D/4]; within a shard, heads in order.
    qkv = t(block.attn.qkv_proj.weight).reshape(D, 4, 3, D // 4)
    heads = lambda i: qkv[:, :, i].reshape(D, N, H)  # noqa: E731
    params = {
        "ln_1": {"scale": block.ln_1.weight.detach().numpy(), "bias": block.ln_1.bias.detach()},
        "attn": {
            "query": {"kernel": heads(0)},
            "value": {"kernel": heads(1)},
            "key": {"kernel": heads(2)},
            "out": {"kernel": t(block.attn.out_proj.weight).reshape(N, H, D)},
        },
        "mlp": {
            "fc_in": {"kernel": t(block.mlp.fc_in.weight), "bias": block.mlp.fc_in.bias.detach()},
            "fc_out": {
                "kernel": t(block.mlp.fc_out.weight),
                "bias": block.mlp.fc_out.bias.detach(),
            },
        },
    }
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float32), params)


def test_codegen_style_block_matches_hf_codegen_block():
    config = CodeGenConfig(
        n_embd=D,
        n_head=N,
        rotary_dim=ROT,
        n_layer=1,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    block = hf.CodeGenBlock(config, layer_idx=0).eval()
    for p in block.parameters():  # HF's init leaves ln_1 at (1, 0) and biases at 0
        torch.nn.init.normal_(p, std=0.3)
    b, length, offset = 2, 7, 5  # positions 5..11: rotary angles are not the identity at 0
    x = np.random.RandomState(0).randn(b, length, D).astype(np.float32)
    positions = offset + np.arange(length)
    position_ids = torch.tensor(np.tile(positions, (b, 1)))
    sin_cos = hf.CodeGenRotaryEmbedding(config)(torch.tensor(x), position_ids)
    causal = np.tril(np.ones((length, length), bool))
    additive = torch.tensor(np.where(causal, 0.0, np.finfo(np.float32).min)[None, None])
    with torch.no_grad():
        expected = block(
            torch.tensor(x),
            attention_mask=additive.float(),
            position_ids=position_ids,
            position_embeddings=sin_cos,
        ).numpy()

    got = _CodeGenStyleBlock().apply(
        {"params": _from_hf(block)}, jnp.asarray(x), jnp.asarray(positions)
    )
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)
