"""`run_layers` with a differing tail vs a hand-written loop of the same blocks.

Scanned uniform blocks + an unrolled last block (and the unrolled `run_layers`) equal the plain
loop with the same params, under the documented param names.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codet5p_jax.layers.attention import MultiHeadAttention
from codet5p_jax.layers.mlp import GPTJMlp
from codet5p_jax.layers.norms import LayerNorm
from codet5p_jax.layers.residual import parallel_residual
from codet5p_jax.layers.stack import run_layers

D, NUM_UNIFORM = 8, 3


class _Block(nn.Module):
    """A GPT-J style block; with `cross_attention`, a third parallel branch reads `encoded`."""

    scanned: bool = False
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, encoded):
        attn = MultiHeadAttention(
            num_heads=2, head_dim=4, features=D, score_scale=0.5, rotary_dim=2, name="attn"
        )
        branches = [lambda h: attn(h, h), GPTJMlp(features=D, mlp_dim=2 * D, name="mlp")]
        if self.cross_attention:
            cross = MultiHeadAttention(
                num_heads=2, head_dim=4, features=D, is_cross_attention=True, name="crossattention"
            )
            branches.insert(1, lambda h: cross(h, encoded))
        x = parallel_residual(x, LayerNorm(name="ln_1"), *branches)
        return (x, None) if self.scanned else x


class _Stack(nn.Module):
    scan: bool
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, x, encoded):
        return run_layers(
            _Block,
            NUM_UNIFORM,
            x,
            encoded,
            scan=self.scan,
            remat_policy=self.remat_policy,
            tail=[(_Block, {"cross_attention": True})],
        )


class _HandUnrolled(nn.Module):
    """The reference: four blocks in a plain loop, only the last with cross-attention."""

    @nn.compact
    def __call__(self, x, encoded):
        for i in range(NUM_UNIFORM + 1):
            x = _Block(cross_attention=i == NUM_UNIFORM, name=f"layers_{i}")(x, encoded)
        return x


def _inputs():
    rng = np.random.RandomState(0)
    x, encoded = rng.randn(2, 5, D), rng.randn(2, 6, D)
    return jnp.asarray(x, jnp.float32), jnp.asarray(encoded, jnp.float32)


def test_param_names_follow_the_documented_layout():
    x, enc = _inputs()
    # Shapes only (eval_shape): names, shapes and logical axes need no computation.
    init = lambda module: jax.eval_shape(module.init, jax.random.key(0), x, enc)["params"]  # noqa: E731
    unrolled, reference = init(_Stack(scan=False)), init(_HandUnrolled())
    assert jax.tree.structure(unrolled) == jax.tree.structure(reference)
    assert sorted(unrolled) == ["layers_0", "layers_1", "layers_2", "layers_3"]
    assert [("crossattention" in unrolled[f"layers_{i}"]) for i in range(4)] == [0, 0, 0, 1]

    scanned = init(_Stack(scan=True))
    assert sorted(scanned) == ["layers", "layers_3"]
    assert "crossattention" not in scanned["layers"] and "crossattention" in scanned["layers_3"]
    kernel = scanned["layers"]["attn"]["query"]["kernel"]
    assert kernel.value.shape == (NUM_UNIFORM, D, 2, 4)
    assert kernel.names == ("layers", "embed", "heads", "kv")
    assert scanned["layers_3"]["attn"]["query"]["kernel"].names == ("embed", "heads", "kv")


@pytest.mark.parametrize("remat_policy", ["none", "dots"])
def test_scanned_uniform_plus_unrolled_tail_equals_fully_unrolled(remat_policy):
    x, enc = _inputs()
    unrolled = nn.unbox(_HandUnrolled().init(jax.random.key(1), x, enc)["params"])
    # Same params in the scanned layout: the uniform blocks stacked on a leading axis.
    uniform = [unrolled[f"layers_{i}"] for i in range(NUM_UNIFORM)]
    scanned = {
        "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *uniform),
        "layers_3": unrolled["layers_3"],
    }
    apply = lambda module, p: jax.jit(module.apply)({"params": p}, x, enc)  # noqa: E731
    want = apply(_HandUnrolled(), unrolled)
    for scan, params in ((False, unrolled), (True, scanned)):
        got = apply(_Stack(scan=scan, remat_policy=remat_policy), params)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)

    # And through the backward pass (where remat acts): the tail block's gradients agree too.
    grad = lambda module, p: jax.jit(jax.grad(lambda q: jnp.sum(apply(module, q) ** 2)))(p)  # noqa: E731
    g_unrolled = grad(_HandUnrolled(), unrolled)["layers_3"]
    g_scanned = grad(_Stack(scan=True, remat_policy=remat_policy), scanned)["layers_3"]
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
        g_scanned,
        g_unrolled,
    )
