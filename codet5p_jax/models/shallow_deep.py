"""CodeT5+ 2B / 6B / 16B: a shallow CodeGen encoder and a deep CodeGen decoder.

Mirrors the released `CodeT5pEncoderDecoderModel` (FACTS §3.5): CodeGen blocks (one LayerNorm
with bias, attention and MLP in parallel, GPT-J interleaved rotary over `rotary_dim`, bias-free
attention projections, `gelu_new` MLP with biases), a bidirectional encoder, cross-attention in
the top L decoder blocks added to the self-attention output inside the block (no extra norm, no
gate), `enc_to_dec_proj` when the widths differ, final `ln_f` per stack and an untied LM head
with bias. Block formula (HF `CodeT5pBlock`):

    h = ln_1(x);  x = (self_attn(h) [+ cross_attn(h, enc)]) + mlp(h) + x

Legend: B batch, S encoder length, T decoder length, De encoder width, D decoder width,
V vocab.
"""

import flax.linen as nn
import jax.numpy as jnp

from codet5p_jax.layers.attention import MultiHeadAttention
from codet5p_jax.layers.embed import Embed, OutputHead
from codet5p_jax.layers.masks import cached_causal_mask, causal_mask, padding_mask
from codet5p_jax.layers.mlp import GPTJMlp
from codet5p_jax.layers.norms import LayerNorm
from codet5p_jax.layers.residual import parallel_residual
from codet5p_jax.layers.stack import run_layers
from codet5p_jax.models.shallow_deep_config import ShallowDeepConfig

ACTIVATION_AXES = ("batch", "length", "embed")
# HF `initializer_range` of every CodeGen linear and embedding.
INIT_STD = 0.02


def stack_dims(cfg: ShallowDeepConfig, stack: str) -> dict:
    """The dimensions of one stack ("encoder" or "decoder") of `cfg`, read once, here."""
    if stack == "encoder":
        return dict(
            features=cfg.encoder_emb_dim,
            num_heads=cfg.encoder_num_heads,
            mlp_dim=cfg.encoder_mlp_dim,
            rotary_dim=cfg.encoder_rotary_dim,
        )
    return dict(
        features=cfg.emb_dim,
        num_heads=cfg.num_heads,
        mlp_dim=cfg.mlp_dim,
        rotary_dim=cfg.rotary_dim,
    )


def codegen_attention(cfg: ShallowDeepConfig, dims: dict, name: str, cross: bool = False):
    """CodeGen attention: bias-free 3D projections, rotary, scores scaled by `H**-0.5`."""
    head_dim = dims["features"] // dims["num_heads"]
    return MultiHeadAttention(
        num_heads=dims["num_heads"],
        head_dim=head_dim,
        features=dims["features"],
        dropout_rate=cfg.dropout_rate,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        precision=cfg.matmul_precision,
        init_std=INIT_STD,
        score_scale=head_dim**-0.5,
        rotary_dim=dims["rotary_dim"],
        is_cross_attention=cross,
        name=name,
    )


class Block(nn.Module):
    """One CodeGen block; with `cross_attention`, also attends to the encoder in parallel.

    Attributes:
      config: The model config.
      stack: "encoder" or "decoder" (selects the dimensions).
      causal: Causal self-attention (decoder) or bidirectional (encoder).
      cross_attention: Has an `encoder_decoder_attention` branch (top decoder blocks).
      scanned: Returns `(x, None)` for `nn.scan`.
      deterministic: Disables dropout.
      decode: Uses and updates the `cache` collection.
    """

    config: ShallowDeepConfig
    stack: str = "decoder"
    cross_attention: bool = False
    scanned: bool = False
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, x, encoded, self_mask, cross_mask, positions, cross_positions, cache_pos):
        """[B, T, D] -> [B, T, D].

        Args:
          x: Block input.
          encoded: `[B, S, D]` projected encoder states (cross-attention blocks only).
          self_mask: Boolean mask broadcastable to `[B, N, T, T_keys]`.
          cross_mask: Boolean mask broadcastable to `[B, N, T, S]`.
          positions: Rotary positions of the new queries and keys `[T]`.
          cross_positions: Rotary positions of the cross-attention queries `[T]`.
          cache_pos: Write offset of the self-attention cache (cached steps), else None.
        """
        cfg = self.config
        dims = stack_dims(cfg, self.stack)
        dropout = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=self.deterministic)  # noqa: E731
        kwargs = dict(deterministic=self.deterministic, decode=self.decode)
        self_attn = codegen_attention(cfg, dims, "attention")
        branches = [
            lambda h: dropout(
                self_attn(
                    h,
                    h,
                    None,
                    self_mask,
                    cache_position=cache_pos,
                    q_positions=positions,
                    kv_positions=positions,
                    **kwargs,
                )
            )
        ]
        if self.cross_attention:
            cross = codegen_attention(cfg, dims, "encoder_decoder_attention", cross=True)
            # Keys sit at encoder positions 0..S-1 (the attention's default), as released.
            branches.append(
                lambda h: dropout(
                    cross(h, encoded, None, cross_mask, q_positions=cross_positions, **kwargs)
                )
            )
        mlp = GPTJMlp(
            features=dims["features"],
            mlp_dim=dims["mlp_dim"],
            dropout_rate=cfg.dropout_rate,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.params_dtype,
            precision=cfg.matmul_precision,
            init_std=INIT_STD,
            name="mlp",
        )
        branches.append(lambda h: mlp(h, deterministic=self.deterministic))
        norm = LayerNorm(
            epsilon=cfg.layer_norm_epsilon,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.params_dtype,
            name="layer_norm",
        )
        # ((self_attn + cross_attn) + mlp) + x: HF's order of the sums.
        x = parallel_residual(x, norm, *branches)
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        return (x, None) if self.scanned else x


def _embed(cfg: ShallowDeepConfig, features: int) -> Embed:
    return Embed(
        num_embeddings=cfg.vocab_size,
        features=features,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        precision=cfg.matmul_precision,
        init_std=INIT_STD,
        name="token_embedder",
    )


def _final_norm(cfg: ShallowDeepConfig) -> LayerNorm:
    return LayerNorm(
        epsilon=cfg.layer_norm_epsilon,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        name="final_norm",
    )


class Stack(nn.Module):
    """Token embedding, CodeGen blocks and `ln_f`: the encoder, or the decoder (no LM head).

    `causal=True` on the encoder's params is CodeGen's own (causal) model, which parity tests use
    to pin the encoder against `transformers.CodeGenModel`.

    Attributes:
      config: The model config.
      stack: "encoder" or "decoder".
      causal: Causal self-attention.
    """

    config: ShallowDeepConfig
    stack: str = "encoder"
    causal: bool = False

    @nn.compact
    def __call__(
        self,
        tokens,
        mask=None,
        encoded=None,
        encoder_mask=None,
        deterministic: bool = True,
        decode: bool = False,
    ):
        """[B, L] tokens -> [B, L, width] final-normed states.

        Args:
          tokens: `[B, L]` ids.
          mask: `[B, L]` 1 = real token: hides padded keys (None: none hidden).
          encoded: `[B, S, D]` projected encoder states (a decoder with cross-attention).
          encoder_mask: `[B, S]` encoder padding mask.
          deterministic: Disables dropout.
          decode: Cached decoding (decoder only): the first call on a `[B, max_len]` dummy
            creates the cache; later calls append `tokens` at the cache position.
        """
        cfg = self.config
        dims = stack_dims(cfg, self.stack)
        x = _embed(cfg, dims["features"])(tokens)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        length = tokens.shape[1]

        cache_pos = None
        positions = jnp.arange(length)
        if decode and self.has_variable("cache", "position"):
            # Cached step: queries at `position + [0, L)` against the whole cache.
            position = self.variable("cache", "position", jnp.zeros, (), jnp.int32)
            max_length = self.get_variable("cache", "key_positions").shape[0]
            cache_pos = position.value
            positions = cache_pos + jnp.arange(length)
            self_mask = cached_causal_mask(cache_pos, length, max_length)
            position.value = cache_pos + length
        else:
            if decode:
                # Cache-creating call: `tokens` is a [B, max_len] dummy fixing the shapes.
                self.variable("cache", "position", jnp.zeros, (), jnp.int32)
                self.variable("cache", "key_positions", jnp.arange, length, dtype=jnp.int32)
            self_mask = causal_mask(length) if self.causal else None
            if mask is not None:
                pad = padding_mask(mask)
                self_mask = pad if self_mask is None else self_mask & pad
        # "released": the cross-attention query is rotated at its index within this call
        # (position 0 for a token decoded alone); "absolute": at its true position.
        cross_positions = positions
        if cfg.cross_attention_query_positions == "released":
            cross_positions = jnp.arange(length)
        cross_mask = None if encoder_mask is None else padding_mask(encoder_mask)

        num_cross = cfg.num_cross_attention_layers if self.stack == "decoder" else 0
        num_layers = cfg.num_encoder_layers if self.stack == "encoder" else cfg.num_decoder_layers
        x = run_layers(
            Block,
            num_layers - num_cross,
            x,
            encoded,
            self_mask,
            cross_mask,
            positions,
            cross_positions,
            cache_pos,
            scan=cfg.scan_layers,
            remat_policy=cfg.remat_policy,
            tail=[(Block, {"cross_attention": True})] * num_cross,
            config=cfg,
            stack=self.stack,
            deterministic=deterministic,
            decode=decode,
        )
        return _final_norm(cfg)(x)


class CodeT5pShallowDeep(nn.Module):
    """The CodeT5+ 2B-16B encoder-decoder: `encode`, `decode` and teacher-forced `__call__`.

    Speaks the library's decoding protocol (docs/DESIGN.md): `encode(ids, mask) -> [B, S, De]`
    (the encoder's final states) and `decode(encoded, mask, tokens, decode=True)` with a `cache`
    created by one call on a `[B, max_len]` dummy, at which the cross-attention keys/values are
    projected once.
    """

    config: ShallowDeepConfig

    def setup(self):
        cfg = self.config
        self.encoder = Stack(cfg, "encoder")
        self.decoder = Stack(cfg, "decoder", causal=True)
        if cfg.has_enc_to_dec_proj:
            self.enc_to_dec_proj = nn.Dense(
                cfg.emb_dim,
                dtype=cfg.compute_dtype,
                param_dtype=cfg.params_dtype,
                precision=cfg.matmul_precision,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.normal(INIT_STD), ("embed", None)
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
            )
        self.logits_dense = OutputHead(
            cfg.vocab_size,
            param_dtype=cfg.params_dtype,
            precision=cfg.matmul_precision,
            init_std=INIT_STD,
        )

    def _mask(self, tokens, mask):
        return (tokens != self.config.pad_token_id) if mask is None else mask.astype(bool)

    def encode(self, encoder_input_tokens, encoder_mask=None, enable_dropout: bool = False):
        """[B, S] -> [B, S, De] final encoder states (padding positions included)."""
        mask = self._mask(encoder_input_tokens, encoder_mask)
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
        """[B, S, De] encoded, [B, S] mask, [B, T] tokens -> [B, T, V] f32 logits (or hidden)."""
        cfg = self.config
        if cfg.has_enc_to_dec_proj:
            # [B, S, De] -> [B, S, D]; a cached step's placeholder is projected but unused.
            encoded = self.enc_to_dec_proj(encoded)
        x = self.decoder(
            decoder_input_tokens,
            decoder_mask,
            encoded=encoded,
            encoder_mask=encoder_mask.astype(bool),
            deterministic=not enable_dropout,
            decode=decode,
        )
        if return_hidden:
            return x
        return nn.with_logical_constraint(self.logits_dense(x), ("batch", "length", "vocab"))

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        encoder_mask=None,
        decoder_mask=None,
        enable_dropout: bool = False,
    ):
        """[B, S], [B, T] -> [B, T, V] float32 logits (teacher forcing)."""
        mask = self._mask(encoder_input_tokens, encoder_mask)
        encoded = self.encode(encoder_input_tokens, mask, enable_dropout)
        return self.decode(encoded, mask, decoder_input_tokens, decoder_mask, enable_dropout)


def init_args(cfg: ShallowDeepConfig, batch: int = 1, enc_len: int = 4, dec_len: int = 4):
    """Dummy inputs that make `model.init` create every parameter."""
    return jnp.ones((batch, enc_len), jnp.int32), jnp.ones((batch, dec_len), jnp.int32)
