"""Teacher-forced sequence-to-sequence objective (stage 1 and fine-tuning).

CodeT5+ stage 1 (paper §3.1) mixes span denoising, seq2seq causal LM and decoder-only causal LM
on one encoder-decoder network. All three arrive as the same SeqIO feature-converter batch
(`encoder_input_tokens`, `decoder_input_tokens`, `decoder_target_tokens`,
`decoder_loss_weights`); the decoder-only examples simply have `[CLM]` as their whole encoder
input, so the objective needs no branches. When a batch carries `objective_ids [B]`, loss and
accuracy are also reported per objective.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

import gin
from codet5p_jax.objectives import losses

# Stage-1 objective ids (docs/DESIGN.md, Batches) -> metric names.
OBJECTIVE_NAMES = ("span_denoising", "seq2seq_clm", "decoder_clm")


@gin.configurable
class Seq2SeqObjective:
    """Token cross-entropy over `decoder_target_tokens`, weighted by `decoder_loss_weights`.

    The loss is the weighted mean over the batch's target tokens (t5x
    `loss_normalizing_factor=None` behaviour, per step).

    Args:
      model: The Linen encoder-decoder network (`build_model(cfg)`).
      label_smoothing: See `losses.compute_weighted_cross_entropy`.
      z_loss: Coefficient of the `log(Z)^2` auxiliary loss (0 = off, as the released recipe).
      objective_names: Names of the `objective_ids` values, for per-objective metrics.
      loss_chunk_tokens: When set, the decoder's final states are turned into logits and
        losses this many target positions at a time (a `lax.scan` of rematerialised chunks),
        so the full float32 `[B, T, V]` logits never exist, forward or backward; the model
        needs `return_hidden` and a `hidden_to_logits` method. None computes them whole.
    """

    def __init__(
        self,
        model,
        *,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        objective_names: tuple[str, ...] = OBJECTIVE_NAMES,
        loss_chunk_tokens: int | None = None,
    ):
        if not getattr(model.config, "has_decoder", True):
            raise ValueError(
                f"Seq2SeqObjective needs an encoder-decoder model; {model.config.kind!r} has no "
                "decoder."
            )
        if not hasattr(model, "decode"):
            raise ValueError(
                f"Seq2SeqObjective needs a network with a token decoder; {model.config.kind!r} "
                "has none (a classifier trains with ClassificationObjective: "
                "gin/runs/finetune_classify.gin)."
            )
        self.model = model
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.objective_names = tuple(objective_names)
        if loss_chunk_tokens is not None and int(loss_chunk_tokens) < 1:
            raise ValueError(f"loss_chunk_tokens must be >= 1 or None; got {loss_chunk_tokens}.")
        self.loss_chunk_tokens = None if loss_chunk_tokens is None else int(loss_chunk_tokens)

    def init_extra_state(self, params, rng) -> dict[str, Any]:
        """Seq2seq training keeps no state beside the params."""
        del params, rng
        return {}

    def logits(self, params, batch, rng=None, *, enable_dropout: bool = False) -> jax.Array:
        """`[B, T, V]` float32 teacher-forced logits."""
        return self._apply(params, batch, rng, enable_dropout)

    def _apply(self, params, batch, rng, enable_dropout: bool, **kwargs):
        """The network on `batch`, teacher-forced; `kwargs` go to it (`return_hidden`)."""
        rngs = {"dropout": rng} if enable_dropout and rng is not None else {}
        # An explicit encoder mask (instruction-tuning batches) beats `tokens != pad`: seqio
        # pads with 0, a real token in CodeGen's vocabulary.
        if "encoder_input_mask" in batch:
            kwargs["encoder_mask"] = batch["encoder_input_mask"]
        return self.model.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            enable_dropout=enable_dropout,
            rngs=rngs,
            **kwargs,
        )

    def _token_stats(self, logits, targets, weights):
        """`(token_losses, token_z, correct)`, each `[..., T]`, from `[..., T, V]` logits."""
        token_losses, token_z = losses.compute_weighted_cross_entropy(
            logits, targets, weights, label_smoothing=self.label_smoothing, z_loss=self.z_loss
        )
        return token_losses, token_z, losses.compute_weighted_accuracy(logits, targets, weights)

    def _chunked_token_stats(self, params, batch, rng, targets, weights, enable_dropout):
        """`_token_stats` a chunk of positions at a time, from the decoder's final states."""
        hidden = self._apply(params, batch, rng, enable_dropout, return_hidden=True)
        b, t, d = hidden.shape
        n, chunk = b * t, min(self.loss_chunk_tokens, b * t)
        pad = -n % chunk  # padded positions carry weight 0 and are cut off below

        def rows(x):
            x = x.reshape(n, *x.shape[2:])
            x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
            return x.reshape(-1, chunk, *x.shape[1:])

        # Remat: the backward pass recomputes each chunk's logits instead of keeping them all.
        @jax.checkpoint
        def one_chunk(h, tgt, w):
            logits = self.model.apply({"params": params}, h, method="hidden_to_logits")
            return self._token_stats(logits, tgt, w)

        def body(carry, xs):
            h, tgt, w = xs
            out = one_chunk(h[None], tgt[None], w[None])
            return carry, jax.tree.map(lambda x: x[0], out)

        _, stats = lax.scan(body, None, (rows(hidden), rows(targets), rows(weights)))
        return jax.tree.map(lambda x: x.reshape(-1)[:n].reshape(b, t), stats)

    def loss_fn(self, params, extra_state, batch, rng, *, enable_dropout: bool = True):
        """Returns `(loss, (metrics, extra_state))` for one batch (see docs/DESIGN.md)."""
        targets = batch["decoder_target_tokens"]
        weights = batch.get("decoder_loss_weights")
        if weights is None:
            weights = (targets != 0).astype(jnp.int32)
        if self.loss_chunk_tokens is None:
            logits = self.logits(params, batch, rng, enable_dropout=enable_dropout)
            token_losses, token_z, correct = self._token_stats(logits, targets, weights)
        else:
            token_losses, token_z, correct = self._chunked_token_stats(
                params, batch, rng, targets, weights, enable_dropout
            )
        weights = weights.astype(jnp.float32)
        num_tokens = weights.sum()
        denom = jnp.maximum(num_tokens, 1.0)
        loss = token_losses.sum() / denom
        metrics = {
            "loss": loss,
            "accuracy": correct.sum() / denom,
            "tokens": num_tokens,
        }
        if self.z_loss:
            metrics["z_loss"] = token_z.sum() / denom
        if "objective_ids" in batch:
            metrics.update(
                self._per_objective(batch["objective_ids"], token_losses, correct, weights)
            )
        return loss, (metrics, extra_state)

    def _per_objective(self, ids, token_losses, correct, weights) -> dict[str, jax.Array]:
        """`loss/<name>`, `accuracy/<name>`, `tokens/<name>` for each objective id.

        A window-level average must weight `loss/<name>` by `tokens/<name>` (the metrics writer
        does); an objective absent from the batch reports 0 with 0 tokens.
        """
        n = len(self.objective_names)
        tok = losses.sum_by_group(weights, ids, n)
        loss = losses.sum_by_group(token_losses, ids, n) / jnp.maximum(tok, 1.0)
        acc = losses.sum_by_group(correct, ids, n) / jnp.maximum(tok, 1.0)
        out = {}
        for i, name in enumerate(self.objective_names):
            out[f"loss/{name}"] = loss[i]
            out[f"accuracy/{name}"] = acc[i]
            out[f"tokens/{name}"] = tok[i]
        return out
