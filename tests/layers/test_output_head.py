"""Untied output head with bias vs `torch.nn.Linear` (HF CodeGen `lm_head`)."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from codet5p_jax.layers.embed import OutputHead


def _reference(d, v):
    torch.manual_seed(0)
    ref = torch.nn.Linear(d, v)  # bias=True, as CodeGen's lm_head
    params = {
        "kernel": jnp.asarray(ref.weight.detach().numpy().T),
        "bias": jnp.asarray(ref.bias.detach().numpy()),
    }
    return ref, params


def test_output_head_matches_torch_linear():
    d, v = 16, 40
    ref, params = _reference(d, v)
    x = np.random.RandomState(0).randn(2, 3, d).astype(np.float32)
    expected = ref(torch.tensor(x)).detach().numpy()
    got = OutputHead(vocab_size=v).apply({"params": params}, jnp.asarray(x))
    assert got.shape == (2, 3, v) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_output_head_logits_are_float32_for_bf16_inputs():
    # The float32 island: bf16 hidden states and bf16 params still give float32 logits equal
    # to torch's float32 Linear on the same (bf16-representable) values.
    d, v = 16, 40
    ref, params = _reference(d, v)
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    ref.weight.data = torch.tensor(np.asarray(params["kernel"], np.float32).T)
    ref.bias.data = torch.tensor(np.asarray(params["bias"], np.float32))
    x = jnp.asarray(np.random.RandomState(1).randn(2, 3, d), jnp.bfloat16)
    expected = ref(torch.tensor(np.asarray(x, np.float32))).detach().numpy()
    got = OutputHead(vocab_size=v, param_dtype=jnp.bfloat16).apply({"params": params}, x)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_output_head_param_tree():
    boxed = OutputHead(vocab_size=40).init(jax.random.key(0), jnp.ones((1, 2, 16)))["params"]
    assert boxed["kernel"].names == ("embed", "vocab") and boxed["kernel"].value.shape == (16, 40)
    assert boxed["bias"].names == ("vocab",) and boxed["bias"].value.shape == (40,)
    np.testing.assert_array_equal(np.asarray(boxed["bias"].value), 0.0)  # as HF's _init_weights
