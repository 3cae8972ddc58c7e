"""CodeT5+ classifiers (kind "classifier"): defect detection and clone-pair detection heads.

One network, three ways to pool a sequence into a vector (`T5Config.pooling`):

* "first": the encoder's state of the first token (as the embedding model reads `<s>`);
* "mean": the mean of the encoder states over real (non-pad) tokens;
* "eos_decoder": CodeT5's recipe (`DefectModel` / `CloneModel` of salesforce/CodeT5, and HF
  `T5ForSequenceClassification`): the input, shifted right, is also the decoder input, and the
  decoder's final state at the last `</s>` of the input is the vector.

The head is HF's `T5ClassificationHead`: dropout, dense `[D', D]`, tanh, dropout, `out_proj`
`[D, num_labels]`, both with bias. With `pair_input` the network reads `[B, 2, S]` (two
functions), pools each and concatenates the two vectors (`D' = 2D`), like CodeT5's clone model.

Legend: B batch, S input length, D emb_dim, C num_labels.
"""

import flax.linen as nn
import jax.numpy as jnp

from codet5p_jax.config import T5Config
from codet5p_jax.models.encdec import Decoder, Encoder, default_mask, t5_embed


def shift_right(tokens, start_id: int):
    """`[B, S]` -> `[B, S]`: `start_id` then `tokens[:, :-1]` (HF T5 `_shift_right`)."""
    start = jnp.full((tokens.shape[0], 1), start_id, tokens.dtype)
    return jnp.concatenate([start, tokens[:, :-1]], axis=1)


def last_eos_index(tokens, mask, eos_id: int):
    """`[B]` index of the last `eos_id` of each row, or of its last real token if it has none.

    HF `T5ForSequenceClassification` refuses rows without `</s>`; SeqIO features always end in
    one (EOS appended after trimming), so the fallback only serves hand-made inputs.
    """
    positions = jnp.arange(tokens.shape[1])[None, :]
    last_eos = jnp.max(jnp.where(tokens == eos_id, positions, -1), axis=1)
    last_real = jnp.max(jnp.where(mask, positions, 0), axis=1)
    return jnp.where(last_eos >= 0, last_eos, last_real)


class ClassificationHead(nn.Module):
    """HF `T5ClassificationHead`: `[B, D'] -> [B, C]` float32 logits."""

    config: T5Config

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate)

        def dense(features, name):
            return nn.Dense(
                features,
                dtype=jnp.float32,
                param_dtype=cfg.params_dtype,
                precision=cfg.matmul_precision,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.xavier_uniform(), ("embed", None)
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
                name=name,
            )

        # Float32 head (as the released projection heads): the logits feed a softmax loss.
        x = dropout(x.astype(jnp.float32), deterministic=deterministic)
        x = jnp.tanh(dense(cfg.emb_dim, "dense")(x))
        x = dropout(x, deterministic=deterministic)
        return dense(cfg.num_labels, "out_proj")(x)


class CodeT5pClassifier(nn.Module):
    """Sequence (or sequence-pair) classifier on the T5 encoder / encoder-decoder."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = t5_embed(cfg)
        self.encoder = Encoder(cfg, self.token_embedder)
        if cfg.pooling == "eos_decoder":
            self.decoder = Decoder(cfg, self.token_embedder)
        self.classification_head = ClassificationHead(cfg)

    def encode(self, encoder_input_tokens, encoder_mask=None, enable_dropout: bool = False):
        """[B, S] -> [B, S, D] final encoder states."""
        mask = default_mask(encoder_input_tokens, encoder_mask, self.config)
        return self.encoder(encoder_input_tokens, mask, deterministic=not enable_dropout)

    def pool(self, tokens, mask=None, enable_dropout: bool = False):
        """[B, S] tokens -> [B, D] sequence vectors (`config.pooling`)."""
        cfg = self.config
        mask = default_mask(tokens, mask, cfg)
        encoded = self.encode(tokens, mask, enable_dropout)
        if cfg.pooling == "first":
            return encoded[:, 0]
        if cfg.pooling == "mean":
            weights = mask.astype(encoded.dtype)[..., None]
            return (encoded * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
        # The decoder is causal only (HF passes no decoder mask either): pads sit after the
        # last `</s>`, so they never reach the state that is read.
        hidden = self.decoder(
            encoded,
            mask,
            shift_right(tokens, cfg.decoder_start_token_id),
            deterministic=not enable_dropout,
            return_hidden=True,
        )
        index = last_eos_index(tokens, mask, cfg.eos_token_id)
        return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]

    def __call__(self, encoder_input_tokens, encoder_mask=None, enable_dropout: bool = False):
        """[B, S] (or [B, 2, S] with `pair_input`) -> [B, C] float32 logits."""
        cfg = self.config
        if cfg.pair_input:
            if encoder_input_tokens.ndim != 3 or encoder_input_tokens.shape[1] != 2:
                raise ValueError(
                    f"A pair classifier reads [B, 2, S] tokens, got {encoder_input_tokens.shape}"
                )
            b, _, s = encoder_input_tokens.shape
            flat_mask = None if encoder_mask is None else encoder_mask.reshape(b * 2, s)
            vectors = self.pool(encoder_input_tokens.reshape(b * 2, s), flat_mask, enable_dropout)
            # [2B, D] -> [B, 2D]: the two functions of a pair side by side (CodeT5 CloneModel).
            features = vectors.reshape(b, 2 * vectors.shape[-1])
        else:
            features = self.pool(encoder_input_tokens, encoder_mask, enable_dropout)
        return self.classification_head(features, deterministic=not enable_dropout)
