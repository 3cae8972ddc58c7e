"""The `decoder_self` parameter group of the T5 family: the decoder without its cross-attention,
trained by decoder-only completion fine-tuning (`make_optimizer.trainable =
"decoder_self+embeddings"`, paper §3.4: encoder and cross-attention frozen)."""

import jax
import jax.numpy as jnp
import pytest

from codet5p_jax.train import optimizers


def _layer():
    def z(*shape):
        return jnp.zeros(shape)

    return {
        "self_attention": {"query": {"kernel": z(4, 2, 2)}},
        "pre_self_attention_layer_norm": {"scale": z(4)},
        "encoder_decoder_attention": {"query": {"kernel": z(4, 2, 2)}},
        "pre_cross_attention_layer_norm": {"scale": z(4)},
        "mlp": {"wi": {"kernel": z(4, 8)}},
    }


@pytest.mark.parametrize("stack", ["layers_0", "layers"])  # unscanned and scanned names
def test_decoder_self_plus_embeddings_leaves_encoder_and_cross_attention_frozen(stack):
    params = {
        "token_embedder": {"embedding": jnp.zeros((10, 4))},
        "encoder": {stack: {"mlp": {"wi": {"kernel": jnp.zeros((4, 8))}}}},
        "decoder": {stack: _layer(), "decoder_norm": {"scale": jnp.zeros(4)}},
    }
    mask = optimizers.trainable_mask(params, "decoder_self+embeddings")
    trained = {
        optimizers.param_path(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m
    }
    assert trained == {
        "token_embedder/embedding",
        f"decoder/{stack}/self_attention/query/kernel",
        f"decoder/{stack}/pre_self_attention_layer_norm/scale",
        f"decoder/{stack}/mlp/wi/kernel",
        "decoder/decoder_norm/scale",
    }
