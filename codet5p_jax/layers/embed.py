"""Token embedding shared by encoder, decoder and (tied) output logits."""

import flax.linen as nn
import jax.numpy as jnp

from codet5p_jax.config import T5Config


class Embed(nn.Module):
    """A `[V, D]` table; `attend` gives logits against the same table (tied embeddings)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.embedding = self.param(
            "embedding",
            # HF T5 initialises the shared embedding with std 1.0 (factor * 1.0).
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
            (cfg.vocab_size, cfg.emb_dim),
            cfg.params_dtype,
        )

    def __call__(self, tokens):
        """[B, L] int -> [B, L, D]."""
        return jnp.take(self.embedding, tokens, axis=0).astype(self.config.compute_dtype)

    def attend(self, x):
        """[B, L, D] -> [B, L, V] logits, in float32 (a float32 island: softmax over 32k ids)."""
        return jnp.einsum(
            "bld,vd->blv",
            x.astype(jnp.float32),
            self.embedding.astype(jnp.float32),
            precision=self.config.matmul_precision,
        )
