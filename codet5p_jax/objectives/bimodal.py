"""Stage-2 bimodal objective: text-code contrastive, matching and two generation losses.

CodeT5+ paper §3.2 (after ALBEF/BLIP): one jitted step computes

* **ITC**, text-code contrastive: the encoder's first-token (`[CLS]`) state -> `embedding_proj`
  -> L2 norm; a momentum (EMA) copy of token embedder + encoder + projection encodes the batch,
  whose features join text / code queues as extra negatives; learned, clamped temperature;
  symmetric InfoNCE, optionally with soft targets from the momentum model (`alpha`).
* **ITM**, text-code matching: the decoder reads `[ENC]` + code (the code's first token is
  overwritten, as the released retrieval script does) with cross-attention to the text
  encoding; the state at the last `</s>` -> `itm_head` -> 2-way cross-entropy on B positives,
  B text->code and B code->text hard negatives mined by contrastive similarity from the batch
  and, optionally, the queues (which then also keep token ids).
* **T2C / C2T**, text->code (`[CDEC]` start) and code->text (`[TDEC]` start) teacher-forced
  generation losses, reusing the online encoder states.

The learned temperature is the trainable leaf `params["contrastive_temperature"]`, added by
`init_params`; momentum params, queues and their pointer live in the extra state (see
docs/DESIGN.md, Objectives).

Legend: B batch, Lt/Lc text/code length, D emb_dim, E embed_dim, Q queue size, K = B + Q.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import gin
from codet5p_jax.config import STAGE2_ADDED_TOKENS
from codet5p_jax.models.encdec import l2_normalize
from codet5p_jax.objectives import contrastive as C

TEMPERATURE_KEY = "contrastive_temperature"
# Sub-trees of the network the momentum encoder needs (the decoder is never run with momentum).
MOMENTUM_SUBTREES = ("token_embedder", "encoder", "embedding_proj")
GENERATION_KEYS = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")


def _is_box(x) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def _rebox(like, values):
    """Puts `values` back into the `nn.Partitioned` boxes of `like` (no-op for plain leaves)."""
    return jax.tree.map(
        lambda b, v: b.replace_boxed(v) if _is_box(b) else v, like, values, is_leaf=_is_box
    )


def strip_objective_params(params):
    """The network's own parameters: `params` without the objective's temperature leaf."""
    return {k: v for k, v in params.items() if k != TEMPERATURE_KEY}


def weighted_cross_entropy(logits, targets, weights):
    """Token cross-entropy summed with `weights` and divided by their sum (float32)."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    weights = weights.astype(jnp.float32)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@gin.configurable
class BimodalObjective:
    """Stage-2 objective following the trainer contract (`init_extra_state`, `loss_fn`).

    Args:
      model: The bimodal (or embedding, when only ITC is on) Linen network (`build_model`).
      itc_weight / itm_weight / t2c_weight / c2t_weight: Loss weights (paper: all 1).
      queue_size: Entries per feature queue (paper retrieval fine-tuning: 57,600); a multiple of
        the global batch size.
      momentum: EMA coefficient of the momentum encoder (ALBEF/BLIP default 0.995).
      temperature_init: Initial learned temperature (ALBEF/BLIP 0.07).
      temperature_min / temperature_max: Clamp bounds (BLIP 0.001 / 0.5).
      alpha: Weight of momentum-model soft targets in ITC (BLIP 0.4; 0 = hard targets).
      hard_negatives_from_queue: Also mine matching negatives from the queues (the queues then
        store token ids; paper App. D "retrieves 64 hard negatives from the queues").
      sample_hard_negatives: Sample negatives from softmax(similarity) (BLIP) instead of arg-max.
      text_length / code_length: Token lengths of the queued ids (needed only with
        `hard_negatives_from_queue`).
      enc_id: Token that replaces the code's first token in the matching decoder (`[ENC]`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        itc_weight: float = 1.0,
        itm_weight: float = 1.0,
        t2c_weight: float = 1.0,
        c2t_weight: float = 1.0,
        queue_size: int = 57600,
        momentum: float = 0.995,
        temperature_init: float = 0.07,
        temperature_min: float = 0.001,
        temperature_max: float = 0.5,
        alpha: float = 0.4,
        hard_negatives_from_queue: bool = False,
        sample_hard_negatives: bool = True,
        text_length: int = 64,
        code_length: int = 360,
        enc_id: int = STAGE2_ADDED_TOKENS["[ENC]"],
    ):
        C.check_temperature_bounds(temperature_min, temperature_max, temperature_init)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        if queue_size < 1:
            raise ValueError(f"queue_size must be positive, got {queue_size}.")
        cfg = model.config
        if not cfg.embed_dim:
            raise ValueError(f"Stage 2 needs a projection head; model kind {cfg.kind!r} has none.")
        if itm_weight and not cfg.has_itm_head:
            raise ValueError(f"itm_weight={itm_weight} needs a bimodal model, got {cfg.kind!r}.")
        if (t2c_weight or c2t_weight) and not cfg.has_decoder:
            raise ValueError("Generation losses need a decoder; set t2c_weight = c2t_weight = 0.")
        self.model = model
        self.weights = dict(itc=itc_weight, itm=itm_weight, t2c=t2c_weight, c2t=c2t_weight)
        self.queue_size = queue_size
        self.momentum = momentum
        self.temperature_init = temperature_init
        self.temperature_bounds = (temperature_min, temperature_max)
        self.alpha = alpha
        self.hard_negatives_from_queue = hard_negatives_from_queue
        self.sample_hard_negatives = sample_hard_negatives
        self.lengths = dict(text=text_length, code=code_length)
        self.enc_id = enc_id

    # ----------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------
    def init_params(self, params, rng=None):
        """Adds the learned temperature (a replicated scalar leaf) to the network's params."""
        del rng
        temperature = jnp.asarray(self.temperature_init, jnp.float32)
        if any(_is_box(x) for x in jax.tree.leaves(params, is_leaf=_is_box)):
            temperature = nn.Partitioned(temperature, names=())
        return {**params, TEMPERATURE_KEY: temperature}

    def init_extra_state(self, params, rng) -> dict[str, Any]:
        """Momentum copy (boxes kept, so it shards like params), queues, pointer, fill count.

        Empty queue slots are masked out of every softmax until written, so their initial
        values (random unit vectors, as ALBEF) never act as negatives.
        """
        missing = [k for k in MOMENTUM_SUBTREES if k not in params]
        if missing:
            raise ValueError(f"params lack {missing}: is this a bimodal/embedding network?")
        momentum = {k: jax.tree.map(jnp.copy, params[k]) for k in MOMENTUM_SUBTREES}
        dim = self.model.config.embed_dim
        k_text, k_code = jax.random.split(rng)
        state = {
            "momentum_params": momentum,
            "text_queue": l2_normalize(jax.random.normal(k_text, (self.queue_size, dim))),
            "code_queue": l2_normalize(jax.random.normal(k_code, (self.queue_size, dim))),
            "id_queue": jnp.full((self.queue_size,), -1, jnp.int32),
            "queue_ptr": jnp.zeros((), jnp.int32),
            "queue_filled": jnp.zeros((), jnp.int32),
        }
        if self.hard_negatives_from_queue:
            for kind, length in self.lengths.items():
                state[f"{kind}_token_queue"] = jnp.zeros((self.queue_size, length), jnp.int32)
        return state

    def temperature(self, params):
        """The clamped temperature used in the softmaxes (BLIP clamps before each use)."""
        lo, hi = self.temperature_bounds
        return jnp.clip(params[TEMPERATURE_KEY], lo, hi)

    # ----------------------------------------------------------------------------------------
    # Network pieces
    # ----------------------------------------------------------------------------------------
    def _apply(self, params, *args, method, rng=None, enable_dropout=None, **kwargs):
        """`model.apply` of `method`; `enable_dropout=None` for methods without dropout."""
        if enable_dropout is not None:
            kwargs["enable_dropout"] = enable_dropout
        rngs = {"dropout": rng} if (enable_dropout and rng is not None) else {}
        return self.model.apply({"params": params}, *args, rngs=rngs, method=method, **kwargs)

    def _match_logits(self, net, text_hidden, text_mask, code_tokens, rng, enable_dropout):
        """[N, Lt, D] text states + [N, Lc] code ids -> [N, 2] matching logits."""
        dec_tokens = code_tokens.at[:, 0].set(self.enc_id)
        hidden = self._apply(
            net,
            text_hidden,
            text_mask,
            dec_tokens,
            decoder_mask=code_tokens != 0,
            return_hidden=True,
            method=self.model.decode,
            rng=rng,
            enable_dropout=enable_dropout,
        )
        eos = C.last_token_index(code_tokens, self.model.config.eos_token_id)
        states = jnp.take_along_axis(hidden, eos[:, None, None], axis=1)[:, 0]
        return self._apply(net, states, method=self.model.itm_logits)

    def _generation_loss(self, net, encoded, mask, batch, prefix, rng, enable_dropout):
        inputs, targets, weights = (batch[f"{prefix}_{k}"] for k in GENERATION_KEYS)
        logits = self._apply(
            net,
            encoded,
            mask,
            inputs,
            method=self.model.decode,
            rng=rng,
            enable_dropout=enable_dropout,
        )
        return weighted_cross_entropy(logits, targets, weights)

    # ----------------------------------------------------------------------------------------
    # Loss
    # ----------------------------------------------------------------------------------------
    def loss_fn(self, params, extra_state, batch, rng, *, enable_dropout=True):
        """Weighted sum of ITC, ITM, T2C and C2T; returns `(loss, (metrics, new_extra_state))`.

        Args:
          params: Network params plus `contrastive_temperature` (plain arrays).
          extra_state: From `init_extra_state` (boxed or plain leaves; returned alike).
          batch: `text_tokens [B, Lt]`, `code_tokens [B, Lc]`, optional `pair_ids [B]` (same id
            = same pair, -1 unknown), and for the generation losses `text_to_code_*` /
            `code_to_text_*` decoder features (`GENERATION_KEYS`).
          rng: PRNG key (dropout, hard-negative sampling).
          enable_dropout: Training-mode dropout.
        """
        text, code = batch["text_tokens"], batch["code_tokens"]
        bsz = text.shape[0]
        C.check_queue_size(self.queue_size, bsz)
        text_mask, code_mask = text != 0, code != 0
        pair_ids = batch.get("pair_ids", jnp.full((bsz,), -1, jnp.int32)).astype(jnp.int32)
        rngs = jax.random.split(rng, 8)
        net = strip_objective_params(params)
        temp = self.temperature(params)
        state = nn.unbox(extra_state)

        # Online encoder: [B, L, D] states and [B, E] unit features.
        text_hidden = self._apply(
            net,
            text,
            text_mask,
            method=self.model.encode,
            rng=rngs[0],
            enable_dropout=enable_dropout,
        )
        code_hidden = self._apply(
            net,
            code,
            code_mask,
            method=self.model.encode,
            rng=rngs[1],
            enable_dropout=enable_dropout,
        )
        text_feat = self._apply(net, text_hidden[:, 0], method=self.model.project)
        code_feat = self._apply(net, code_hidden[:, 0], method=self.model.project)

        # Momentum encoder: EMA first, then features (ALBEF order); no gradient flows here.
        momentum = C.ema_update(
            state["momentum_params"], {k: net[k] for k in MOMENTUM_SUBTREES}, self.momentum
        )
        momentum = jax.lax.stop_gradient(momentum)
        text_feat_m = self._apply(momentum, text, text_mask, method=self.model.embed)
        code_feat_m = self._apply(momentum, code, code_mask, method=self.model.embed)

        # Candidates K = momentum batch + queue; the queue's unwritten slots are invalid.
        valid = jnp.concatenate(
            [jnp.ones((bsz,), bool), C.queue_valid_mask(self.queue_size, state["queue_filled"])]
        )
        all_text_m = jnp.concatenate([text_feat_m, state["text_queue"]])
        all_code_m = jnp.concatenate([code_feat_m, state["code_queue"]])
        all_ids = jnp.concatenate([pair_ids, state["id_queue"]])
        positives = C.positive_mask(pair_ids, all_ids)

        metrics = {"temperature": temp}
        losses = {}
        sim_t2c = C.similarity_logits(text_feat, all_code_m, temp, valid)
        sim_c2t = C.similarity_logits(code_feat, all_text_m, temp, valid)
        if self.weights["itc"]:
            # Targets are constants (BLIP builds them under no_grad): a gradient through their
            # temperature would sharpen the targets instead of the predictions and drives the
            # learned temperature to its lower clamp.
            t_sg = jax.lax.stop_gradient(temp)
            targets_t2c = jax.lax.stop_gradient(
                C.contrastive_targets(
                    positives, valid, C.similarity_logits(text_feat_m, all_code_m, t_sg), self.alpha
                )
            )
            targets_c2t = jax.lax.stop_gradient(
                C.contrastive_targets(
                    positives, valid, C.similarity_logits(code_feat_m, all_text_m, t_sg), self.alpha
                )
            )
            losses["itc"] = 0.5 * (
                C.info_nce(text_feat, all_code_m, targets_t2c, temp, valid)
                + C.info_nce(code_feat, all_text_m, targets_c2t, temp, valid)
            )
            metrics["itc_t2c_accuracy"] = jnp.mean(jnp.argmax(sim_t2c, -1) == jnp.arange(bsz))

        if self.weights["itm"]:
            losses["itm"], metrics["itm_accuracy"] = self._itm(
                net, state, text, code, text_hidden, text_mask, sim_t2c, sim_c2t, positives,
                valid, rngs[2:5], enable_dropout,
            )  # fmt: skip

        for name, prefix, encoded, mask, key in (
            ("t2c", "text_to_code", text_hidden, text_mask, rngs[5]),
            ("c2t", "code_to_text", code_hidden, code_mask, rngs[6]),
        ):
            if self.weights[name]:
                losses[name] = self._generation_loss(
                    net, encoded, mask, batch, prefix, key, enable_dropout
                )

        loss = sum(self.weights[k] * v for k, v in losses.items())
        metrics.update({f"loss_{k}": v for k, v in losses.items()})
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        new_state = self._next_state(state, momentum, text_feat_m, code_feat_m, pair_ids, batch)
        return loss, (metrics, _rebox(extra_state, new_state))

    def _itm(self, net, state, text, code, text_hidden, text_mask, sim_t2c, sim_c2t, positives,
             valid, rngs, enable_dropout):  # fmt: skip
        """Matching loss on B positives + B (text, hard code) + B (hard text, code) pairs."""
        bsz = text.shape[0]
        if bsz < 2 and not self.hard_negatives_from_queue:
            raise ValueError("In-batch hard negatives need a global batch of at least 2 pairs.")
        if self.hard_negatives_from_queue:
            text = _fit_length(text, self.lengths["text"])
            code = _fit_length(code, self.lengths["code"])
            text_hidden = _fit_length(text_hidden, self.lengths["text"])
            text_mask = text != 0
            cand_text = jnp.concatenate([text, state["text_token_queue"]])
            cand_code = jnp.concatenate([code, state["code_token_queue"]])
            cand_valid = valid
        else:
            # Mine within the batch only: the first B candidates.
            cand_text, cand_code = text, code
            sim_t2c, sim_c2t, positives = sim_t2c[:, :bsz], sim_c2t[:, :bsz], positives[:, :bsz]
            cand_valid = valid[:bsz]
        sim_t2c, sim_c2t = jax.lax.stop_gradient(sim_t2c), jax.lax.stop_gradient(sim_c2t)
        noise = (
            [jax.random.gumbel(k, sim_t2c.shape) for k in rngs[:2]]
            if self.sample_hard_negatives
            else [None, None]
        )
        neg_code = C.select_hard_negatives(sim_t2c, positives, cand_valid, noise[0])
        neg_text = C.select_hard_negatives(sim_c2t, positives, cand_valid, noise[1])
        neg_text_tokens = cand_text[neg_text]
        # Negative texts are (re-)encoded by the online encoder: they may come from the queue.
        neg_text_hidden = self._apply(
            net,
            neg_text_tokens,
            neg_text_tokens != 0,
            method=self.model.encode,
            rng=rngs[2],
            enable_dropout=enable_dropout,
        )
        all_text_hidden = jnp.concatenate([text_hidden, text_hidden, neg_text_hidden])
        all_text_mask = jnp.concatenate([text_mask, text_mask, neg_text_tokens != 0])
        all_code = jnp.concatenate([code, cand_code[neg_code], code])
        logits = self._match_logits(
            net, all_text_hidden, all_text_mask, all_code, rngs[2], enable_dropout
        )
        labels = jnp.concatenate([jnp.ones((bsz,), jnp.int32), jnp.zeros((2 * bsz,), jnp.int32)])
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        return C.matching_loss(logits, labels), accuracy

    def _next_state(self, state, momentum, text_feat_m, code_feat_m, pair_ids, batch):
        """EMA'd momentum params; the momentum features (and ids, tokens) enqueued."""
        ptr = state["queue_ptr"]
        new = dict(state, momentum_params=momentum)
        new["text_queue"], new_ptr = C.enqueue(state["text_queue"], ptr, text_feat_m)
        new["code_queue"], _ = C.enqueue(state["code_queue"], ptr, code_feat_m)
        new["id_queue"], _ = C.enqueue(state["id_queue"], ptr, pair_ids)
        if self.hard_negatives_from_queue:
            for kind in ("text", "code"):
                tokens = _fit_length(batch[f"{kind}_tokens"], self.lengths[kind])
                new[f"{kind}_token_queue"], _ = C.enqueue(state[f"{kind}_token_queue"], ptr, tokens)
        new["queue_ptr"] = new_ptr.astype(jnp.int32)
        bsz = text_feat_m.shape[0]
        new["queue_filled"] = jnp.minimum(state["queue_filled"] + bsz, self.queue_size)
        return jax.lax.stop_gradient(new)


def _fit_length(x, length: int):
    """Pads with 0 or truncates `[B, L, ...]` to `[B, length, ...]` to match the token queues."""
    if x.shape[1] >= length:
        return x[:, :length]
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1])) + ((0, 0),) * (x.ndim - 2))
