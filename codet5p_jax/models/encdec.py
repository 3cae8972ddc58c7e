"""CodeT5+ 220M / 770M (and the 220M bimodal model): a T5 v1.0 encoder-decoder.

Mirrors HF `T5ForConditionalGeneration` (ReLU FFN, pre-norm RMS norm, relative position bias
computed once per stack and shared by its layers, tied embeddings rescaled by `emb_dim**-0.5`
before the logits, no biases) and the released `CodeT5pBimodalModel` heads.

Legend: B batch, S encoder length, T decoder length, D emb_dim, V vocab, E embed_dim.
"""

import flax.linen as nn
import jax.numpy as jnp

from codet5p_jax.config import T5Config
from codet5p_jax.layers.attention import MultiHeadAttention
from codet5p_jax.layers.embed import Embed
from codet5p_jax.layers.masks import cached_causal_mask, causal_mask, padding_mask
from codet5p_jax.layers.mlp import T5Mlp
from codet5p_jax.layers.norms import RMSNorm
from codet5p_jax.layers.positions import RelativePositionBias
from codet5p_jax.layers.stack import run_layers

ACTIVATION_AXES = ("batch", "length", "embed")


# The T5 layers, with every dimension and option read from the config once, here.
def t5_norm(cfg: T5Config, name: str) -> RMSNorm:
    """T5's pre-norm / final norm (RMS, scale only)."""
    return RMSNorm(
        epsilon=cfg.layer_norm_epsilon,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        name=name,
    )


def t5_attention(cfg: T5Config, name: str, is_cross_attention: bool = False):
    """T5 attention: bias-free 3D projections, HF fan-in init, unscaled scores."""
    return MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        features=cfg.emb_dim,
        dropout_rate=cfg.dropout_rate,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        precision=cfg.matmul_precision,
        is_cross_attention=is_cross_attention,
        implementation=cfg.attention_impl,
        name=name,
    )


def t5_mlp(cfg: T5Config) -> T5Mlp:
    """T5 v1.0 ReLU feed-forward block."""
    return T5Mlp(
        features=cfg.emb_dim,
        mlp_dim=cfg.mlp_dim,
        dropout_rate=cfg.dropout_rate,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        precision=cfg.matmul_precision,
        name="mlp",
    )


def t5_relpos(cfg: T5Config, bidirectional: bool) -> RelativePositionBias:
    """The per-stack relative position bias (HF: block 0's table, shared by all blocks)."""
    return RelativePositionBias(
        num_heads=cfg.num_heads,
        num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance,
        bidirectional=bidirectional,
        stddev=cfg.emb_dim**-0.5,
        param_dtype=cfg.params_dtype,
        name="relpos_bias",
    )


def t5_embed(cfg: T5Config) -> Embed:
    """The shared token embedding (HF T5 init std 1.0), also the tied output table."""
    return Embed(
        num_embeddings=cfg.vocab_size,
        features=cfg.emb_dim,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        precision=cfg.matmul_precision,
    )


class EncoderLayer(nn.Module):
    """Bidirectional self-attention + MLP, each pre-normed with a residual."""

    config: T5Config
    scanned: bool = False
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, bias, mask):
        """[B, S, D] -> [B, S, D]."""
        cfg = self.config
        dropout = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=self.deterministic)  # noqa: E731
        h = t5_norm(cfg, "pre_attention_layer_norm")(x)
        h = t5_attention(cfg, "attention")(h, h, bias, mask, deterministic=self.deterministic)
        x = x + dropout(h)
        h = t5_norm(cfg, "pre_mlp_layer_norm")(x)
        x = x + dropout(t5_mlp(cfg)(h, deterministic=self.deterministic))
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        return (x, None) if self.scanned else x


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder, MLP; pre-norm residuals."""

    config: T5Config
    scanned: bool = False
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, x, encoded, bias, self_mask, cross_mask, cache_position):
        """[B, T, D] -> [B, T, D]."""
        cfg = self.config
        dropout = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=self.deterministic)  # noqa: E731
        kwargs = dict(deterministic=self.deterministic, decode=self.decode)
        h = t5_norm(cfg, "pre_self_attention_layer_norm")(x)
        h = t5_attention(cfg, "self_attention")(
            h, h, bias, self_mask, cache_position=cache_position, **kwargs
        )
        x = x + dropout(h)
        h = t5_norm(cfg, "pre_cross_attention_layer_norm")(x)
        # HF T5 cross-attention has no position bias: only the encoder padding mask.
        h = t5_attention(cfg, "encoder_decoder_attention", is_cross_attention=True)(
            h, encoded, None, cross_mask, **kwargs
        )
        x = x + dropout(h)
        h = t5_norm(cfg, "pre_mlp_layer_norm")(x)
        x = x + dropout(t5_mlp(cfg)(h, deterministic=self.deterministic))
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        return (x, None) if self.scanned else x


class Encoder(nn.Module):
    """Embeds tokens and runs the encoder blocks; output is final-normed."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, tokens, mask, deterministic: bool = True):
        """[B, S] tokens, [B, S] mask -> [B, S, D]."""
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate)
        x = dropout(self.shared_embedding(tokens), deterministic=deterministic)
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        length = tokens.shape[1]
        bias = t5_relpos(cfg, bidirectional=True)(length, length)
        x = run_layers(
            EncoderLayer,
            cfg.num_encoder_layers,
            x,
            bias,
            padding_mask(mask),
            scan=cfg.scan_layers,
            remat_policy=cfg.remat_policy,
            config=cfg,
            deterministic=deterministic,
        )
        x = t5_norm(cfg, "encoder_norm")(x)
        return dropout(x, deterministic=deterministic)


class Decoder(nn.Module):
    """Embeds decoder tokens, runs the decoder blocks and returns logits or hidden states."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded,
        encoder_mask,
        tokens,
        decoder_mask=None,
        deterministic: bool = True,
        decode: bool = False,
        return_hidden: bool = False,
    ):
        """[B, S, D] encoded, [B, T] tokens -> [B, T, V] float32 logits (or [B, T, D] hidden)."""
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate)
        x = dropout(self.shared_embedding(tokens), deterministic=deterministic)
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        relpos = t5_relpos(cfg, bidirectional=False)
        length = tokens.shape[1]

        cache_position = None
        if decode and self.has_variable("cache", "position"):
            # Cached step: queries at `position + [0, T)` against the whole cache.
            position = self.variable("cache", "position", jnp.zeros, (), jnp.int32)
            max_length = self.get_variable("cache", "key_positions").shape[0]
            cache_position = position.value
            bias = relpos(length, max_length, q_offset=cache_position)
            self_mask = cached_causal_mask(cache_position, length, max_length)
            position.value = cache_position + length
        else:
            if decode:
                # Cache-creating call: `tokens` is a [B, max_length] dummy fixing the shapes.
                self.variable("cache", "position", jnp.zeros, (), jnp.int32)
                self.variable("cache", "key_positions", jnp.arange, length, dtype=jnp.int32)
            bias = relpos(length, length)
            self_mask = causal_mask(length)
            if decoder_mask is not None:
                self_mask = self_mask & padding_mask(decoder_mask)

        x = run_layers(
            DecoderLayer,
            cfg.num_decoder_layers,
            x,
            encoded,
            bias,
            self_mask,
            padding_mask(encoder_mask),
            cache_position,
            scan=cfg.scan_layers,
            remat_policy=cfg.remat_policy,
            config=cfg,
            deterministic=deterministic,
            decode=decode,
        )
        x = t5_norm(cfg, "decoder_norm")(x)
        x = dropout(x, deterministic=deterministic)
        if return_hidden:
            return x
        logits = tied_logits(self.shared_embedding, x, cfg.emb_dim)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


def tied_logits(embedding: Embed, x, emb_dim: int):
    """[B, T, D] final decoder states -> [B, T, V] float32 logits against the shared table."""
    # Tied embeddings (T5 v1.0): HF rescales by d_model**-0.5 before the shared-table logits.
    # In float32 (part of the logits' float32 island): a bf16 product would round the
    # constant to bf16 too, scaling every logit by 1.0013 (d_model 768).
    return embedding.attend(x.astype(jnp.float32) * emb_dim**-0.5)


def dense_head(cfg: T5Config, features: int, name: str) -> nn.Dense:
    """A float32 linear head with bias (`proj` / `itm_head` of the released models)."""
    return nn.Dense(
        features,
        dtype=jnp.float32,
        param_dtype=cfg.params_dtype,
        precision=cfg.matmul_precision,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
        name=name,
    )


def l2_normalize(x, eps: float = 1e-12):
    """`x / max(||x||, eps)` along the last axis, as torch `F.normalize`."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def default_mask(tokens, mask, cfg: T5Config):
    """The given mask as bool, or `tokens != pad` when none is given."""
    return (tokens != cfg.pad_token_id) if mask is None else mask.astype(bool)


class CodeT5pEncDec(nn.Module):
    """Encoder-decoder CodeT5+ (kinds "t5" and "bimodal").

    One parameter set, three operating modes: `encode` (encoder-only hidden states), `__call__`
    (encoder-decoder logits) and decoder-only use, which feeds the encoder just `[CLM]` (paper
    §3.1.2; see `decoder_only_inputs`).
    """

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = t5_embed(cfg)
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)
        if cfg.embed_dim:
            self.embedding_proj = dense_head(cfg, cfg.embed_dim, "embedding_proj")
        if cfg.has_itm_head:
            self.itm_head = dense_head(cfg, 2, "itm_head")

    def encode(self, encoder_input_tokens, encoder_mask=None, enable_dropout: bool = False):
        """[B, S] -> [B, S, D] final encoder states (padding positions included)."""
        mask = default_mask(encoder_input_tokens, encoder_mask, self.config)
        return self.encoder(encoder_input_tokens, mask, deterministic=not enable_dropout)

    def decode(
        self,
        encoded,
        encoder_mask,
        decoder_input_tokens,
        decoder_mask=None,
        enable_dropout: bool = False,
        decode: bool = False,
        return_hidden: bool = False,
    ):
        """[B, S, D] encoded, [B, S] mask, [B, T] tokens -> [B, T, V] logits ([B, T, D] hidden)."""
        return self.decoder(
            encoded,
            encoder_mask.astype(bool),
            decoder_input_tokens,
            decoder_mask,
            deterministic=not enable_dropout,
            decode=decode,
            return_hidden=return_hidden,
        )

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        encoder_mask=None,
        decoder_mask=None,
        enable_dropout: bool = False,
        return_hidden: bool = False,
    ):
        """[B, S], [B, T] -> [B, T, V] float32 logits (teacher forcing), or [B, T, D] states."""
        mask = default_mask(encoder_input_tokens, encoder_mask, self.config)
        encoded = self.encode(encoder_input_tokens, mask, enable_dropout)
        if self.is_initializing() and self.config.embed_dim:
            self._init_heads(encoded)
        return self.decode(
            encoded,
            mask,
            decoder_input_tokens,
            decoder_mask,
            enable_dropout,
            return_hidden=return_hidden,
        )

    def hidden_to_logits(self, hidden):
        """[B, T, D] final decoder states (`return_hidden=True`) -> [B, T, V] float32 logits.

        The last step of `decode`, apart: a loss can compute the logits a chunk of positions at
        a time (`Seq2SeqObjective(loss_chunk_tokens=...)`).
        """
        return tied_logits(self.token_embedder, hidden, self.config.emb_dim)

    def _init_heads(self, encoded):
        # Heads are only reached through `embed` / `itm_logits`; touch them so `init` makes them.
        self.embedding_proj(encoded[:, 0])
        if self.config.has_itm_head:
            self.itm_head(encoded[:, 0])

    def project(self, first_token_states):
        """[B, D] -> [B, E] L2-normalised contrastive features (`normalize(proj(h))`)."""
        return l2_normalize(self.embedding_proj(first_token_states.astype(jnp.float32)))

    def embed(self, encoder_input_tokens, encoder_mask=None, enable_dropout: bool = False):
        """[B, S] -> [B, E] unit vectors from the first (`[CLS]`/`<s>`) token's state."""
        return self.project(self.encode(encoder_input_tokens, encoder_mask, enable_dropout)[:, 0])

    def itm_logits(self, eos_states):
        """[B, D] decoder states at the final `</s>` -> [B, 2] text-code matching logits."""
        return self.itm_head(eos_states.astype(jnp.float32))


def decoder_only_inputs(batch_size: int, clm_id: int = 3):
    """Encoder input and mask for decoder-only use: the single `[CLM]` token (paper §3.1.2)."""
    tokens = jnp.full((batch_size, 1), clm_id, jnp.int32)
    return tokens, jnp.ones_like(tokens, dtype=bool)
