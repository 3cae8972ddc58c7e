"""GPT-J / CodeGen MLP (`fc_in`, `gelu_new`, `fc_out`, with biases) vs HF `CodeGenMLP`."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers.activations import NewGELUActivation
from transformers.models.codegen.configuration_codegen import CodeGenConfig
from transformers.models.codegen.modeling_codegen import CodeGenMLP

from codet5p_jax.layers.mlp import GPTJMlp, gelu_new


def test_gelu_new_matches_hf():
    x = np.linspace(-6, 6, 1001, dtype=np.float32)
    expected = NewGELUActivation()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(np.asarray(gelu_new(jnp.asarray(x))), expected, atol=1e-6)


def test_gptj_mlp_matches_hf_codegen_mlp():
    d, f = 16, 64
    config = CodeGenConfig(n_embd=d, activation_function="gelu_new", resid_pdrop=0.0)
    torch.manual_seed(0)
    ref = CodeGenMLP(f, config).eval()
    assert isinstance(ref.act, NewGELUActivation)
    for p in ref.parameters():  # HF zero-inits the biases: make them matter
        torch.nn.init.normal_(p, std=0.5)
    x = np.random.RandomState(0).randn(2, 5, d).astype(np.float32)
    expected = ref(torch.tensor(x)).detach().numpy()

    params = {
        "fc_in": {"kernel": ref.fc_in.weight.detach().numpy().T, "bias": ref.fc_in.bias.detach()},
        "fc_out": {
            "kernel": ref.fc_out.weight.detach().numpy().T,
            "bias": ref.fc_out.bias.detach(),
        },
    }
    params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), params)
    got = GPTJMlp(features=d, mlp_dim=f).apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)


def test_gptj_mlp_param_tree():
    module = GPTJMlp(features=8, mlp_dim=32)
    boxed = module.init(jax.random.key(0), jnp.ones((1, 2, 8)))["params"]
    axes = jax.tree.map(lambda p: p.names, boxed, is_leaf=lambda p: hasattr(p, "names"))
    assert axes == {
        "fc_in": {"kernel": ("embed", "mlp"), "bias": ("mlp",)},
        "fc_out": {"kernel": ("mlp", "embed"), "bias": ("embed",)},
    }
