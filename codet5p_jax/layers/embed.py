"""Token embedding (with tied logits) and the untied output head.

Legend: B batch, L length, D features, V vocab.
"""

import flax.linen as nn
import jax.numpy as jnp

from codet5p_jax.dtypes import DType, Precision


class Embed(nn.Module):
    """A `[V, D]` table; `attend` gives logits against the same table (tied embeddings).

    Attributes:
      num_embeddings: V.
      features: D.
      dtype: Compute dtype of the looked-up vectors.
      param_dtype: Storage dtype of the table.
      precision: `lax.Precision` of the `attend` matmul.
      init_std: Normal init std of the table (HF T5: 1.0, `factor * 1.0`).
    """

    num_embeddings: int
    features: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Precision = None
    init_std: float = 1.0

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(self.init_std), ("vocab", "embed")),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, tokens):
        """[B, L] int -> [B, L, D]."""
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x):
        """[B, L, D] -> [B, L, V] logits, in float32 (a float32 island: softmax over V ids)."""
        return jnp.einsum(
            "bld,vd->blv",
            x.astype(jnp.float32),
            self.embedding.astype(jnp.float32),
            precision=self.precision,
        )


class OutputHead(nn.Module):
    """Untied LM head with bias: `[B, L, D] -> [B, L, V]` (HF CodeGen `lm_head`, a `Linear`).

    Float32 island: the matmul and bias run in float32 whatever the compute dtype (HF casts the
    logits to float32 after an fp16 matmul; a float32 matmul loses nothing over that).

    Attributes:
      vocab_size: V.
      param_dtype: Storage dtype of `kernel` `[D, V]` and `bias` `[V]`.
      precision: `lax.Precision` of the matmul.
      init_std: Normal init std of the kernel (HF `initializer_range`); the bias starts at zero.
    """

    vocab_size: int
    param_dtype: DType = jnp.float32
    precision: Precision = None
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x):
        """[B, L, D] -> [B, L, V] float32 logits."""
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(self.init_std), ("embed", "vocab")),
            (x.shape[-1], self.vocab_size),
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
            (self.vocab_size,),
            self.param_dtype,
        )
        logits = jnp.einsum(
            "bld,dv->blv",
            x.astype(jnp.float32),
            kernel.astype(jnp.float32),
            precision=self.precision,
        )
        return logits + bias.astype(jnp.float32)
