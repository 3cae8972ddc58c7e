"""CodeT5+ 110M embedding model: the 220M encoder + a linear projection, L2-normalised.

Mirrors the released `CodeT5pEmbeddingModel` (`F.normalize(proj(last_hidden_state[:, 0]))`).
"""

import flax.linen as nn

from codet5p_jax.config import T5Config
from codet5p_jax.models.encdec import Encoder, default_mask, dense_head, l2_normalize, t5_embed


class CodeT5pEmbedding(nn.Module):
    """Encoder-only model with the contrastive projection head (kind "embedding")."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = t5_embed(cfg)
        self.encoder = Encoder(cfg, self.token_embedder)
        self.embedding_proj = dense_head(cfg, cfg.embed_dim, "embedding_proj")

    def encode(self, encoder_input_tokens, encoder_mask=None, enable_dropout: bool = False):
        """[B, S] -> [B, S, D] final encoder states."""
        mask = default_mask(encoder_input_tokens, encoder_mask, self.config)
        return self.encoder(encoder_input_tokens, mask, deterministic=not enable_dropout)

    def project(self, first_token_states):
        """[B, D] -> [B, E] unit vectors."""
        return l2_normalize(self.embedding_proj(first_token_states))

    def embed(self, encoder_input_tokens, encoder_mask=None, enable_dropout: bool = False):
        """[B, S] -> [B, E] unit vectors from the first token's state."""
        return self.project(self.encode(encoder_input_tokens, encoder_mask, enable_dropout)[:, 0])

    def __call__(self, encoder_input_tokens, encoder_mask=None, enable_dropout: bool = False):
        """Same as `embed` (so `init` needs only encoder tokens)."""
        return self.embed(encoder_input_tokens, encoder_mask, enable_dropout)
