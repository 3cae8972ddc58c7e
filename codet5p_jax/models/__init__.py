"""Networks by config kind: `build_model(cfg)`."""

import flax.linen as nn
import jax.numpy as jnp

from codet5p_jax.config import T5Config
from codet5p_jax.models.classifier import CodeT5pClassifier
from codet5p_jax.models.embedding import CodeT5pEmbedding
from codet5p_jax.models.encdec import CodeT5pEncDec, decoder_only_inputs

__all__ = [
    "CodeT5pClassifier",
    "CodeT5pEmbedding",
    "CodeT5pEncDec",
    "build_model",
    "decoder_only_inputs",
    "init_params",
]


def build_model(cfg: T5Config) -> nn.Module:
    """The Linen network for `cfg.kind` ("t5" / "bimodal" -> enc-dec, "embedding" -> encoder,
    "classifier" -> `CodeT5pClassifier`)."""
    if cfg.kind == "classifier":
        return CodeT5pClassifier(cfg)
    return CodeT5pEmbedding(cfg) if cfg.kind == "embedding" else CodeT5pEncDec(cfg)


def init_args(cfg: T5Config, batch: int = 1, enc_len: int = 4, dec_len: int = 4):
    """Dummy inputs that make `model.init` create every parameter."""
    enc = jnp.ones((batch, enc_len), jnp.int32)
    if cfg.kind == "classifier":
        return (jnp.ones((batch, 2, enc_len), jnp.int32),) if cfg.pair_input else (enc,)
    return (enc,) if cfg.kind == "embedding" else (enc, jnp.ones((batch, dec_len), jnp.int32))


def init_params(cfg: T5Config, rng):
    """Boxed (logically annotated) parameters of a fresh model; see partitioning for sharding."""
    return build_model(cfg).init(rng, *init_args(cfg))["params"]
