"""Pure functions of stage-2 text-code learning: InfoNCE with queues, hard negatives, matching.

Everything here is plain `jnp` on arrays (no modules, no state objects), so each piece is
tested against a numpy reference. The stage-2 objective (`objectives/bimodal.py`) composes them;
the formulas follow ALBEF / BLIP, which the CodeT5+ paper (§3.2) adopts for its text-code
contrastive and matching losses.

Legend: B batch, K candidates (batch + queue), E embed_dim, Q queue size.
"""

import jax
import jax.numpy as jnp

# A large negative instead of -inf keeps softmax finite when a whole row is masked.
_MASKED = -1e9


def check_queue_size(queue_size: int, batch_size: int) -> None:
    """Raises unless the queue holds a whole number of global batches.

    The ring buffer is written one batch at a time without wrapping inside a write (as ALBEF's
    `assert self.queue_size % batch_size == 0`), so the pointer always lands on a batch boundary.

    Raises:
      ValueError: `queue_size` is not a positive multiple of `batch_size`.
    """
    if batch_size < 1:
        raise ValueError(f"Global batch size must be positive, got {batch_size}.")
    if queue_size < 1 or queue_size % batch_size:
        raise ValueError(
            f"queue_size={queue_size} must be a positive multiple of the global batch size "
            f"{batch_size} (each step enqueues one whole batch); e.g. use "
            f"{max(1, queue_size // batch_size) * batch_size}."
        )


def check_temperature_bounds(lower: float, upper: float, init: float) -> None:
    """Raises unless `0 < lower < upper` and `init` lies inside the bounds."""
    if not 0.0 < lower < upper:
        raise ValueError(
            f"Temperature bounds must satisfy 0 < lower < upper, got lower={lower}, upper={upper}."
        )
    if not lower <= init <= upper:
        raise ValueError(f"Initial temperature {init} is outside [{lower}, {upper}].")


def positive_mask(batch_ids, candidate_ids):
    """[B] ids, [K] ids -> [B, K] bool: which candidates are the query's own pair.

    The first `B` candidates are the batch itself, so the diagonal is always positive. Beyond it
    a candidate is positive when it carries the same non-negative pair id (the same pair seen in
    an earlier step and still in the queue, as ALBEF's `idx_queue`); id -1 means "unknown".
    """
    same = (batch_ids[:, None] == candidate_ids[None, :]) & (batch_ids[:, None] >= 0)
    diagonal = jnp.eye(batch_ids.shape[0], candidate_ids.shape[0], dtype=bool)
    return same | diagonal


def contrastive_targets(positives, valid, momentum_logits=None, alpha: float = 0.0):
    """Soft targets `[B, K]`: positives spread uniformly, optionally mixed with the momentum model.

    `targets = alpha * softmax(momentum_logits) + (1 - alpha) * positives / #positives`
    (ALBEF/BLIP momentum distillation); invalid (empty queue) candidates get zero mass.
    """
    hard = positives.astype(jnp.float32) * valid[None, :]
    hard = hard / jnp.maximum(hard.sum(axis=-1, keepdims=True), 1.0)
    if momentum_logits is None or alpha == 0.0:
        return hard
    soft = jax.nn.softmax(jnp.where(valid[None, :], momentum_logits, _MASKED), axis=-1)
    return alpha * soft + (1.0 - alpha) * hard


def similarity_logits(queries, candidates, temperature, valid=None):
    """[B, E] x [K, E] -> [B, K] float32 `q . c / temperature`, invalid columns masked."""
    # Full float32 even on GPUs (TF32 by default): B x queue x E is small next to the model.
    logits = jnp.einsum(
        "be,ke->bk",
        queries.astype(jnp.float32),
        candidates.astype(jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    ) / jnp.asarray(temperature, jnp.float32)
    if valid is not None:
        logits = jnp.where(valid[None, :], logits, _MASKED)
    return logits


def info_nce(queries, candidates, targets, temperature, valid=None):
    """InfoNCE of `queries` against `candidates` (batch + queue) with (soft) `targets`.

    Args:
      queries: `[B, E]` unit vectors of the online model.
      candidates: `[K, E]` unit vectors, usually the momentum batch followed by the queue.
      targets: `[B, K]` rows summing to 1 (see `contrastive_targets`).
      temperature: Scalar softmax temperature.
      valid: Optional `[K]` bool; False columns (unfilled queue slots) are excluded.

    Returns:
      Scalar mean over the batch of `-sum_k targets * log_softmax(q.c / t)`.
    """
    logits = similarity_logits(queries, candidates, temperature, valid)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.sum(targets * log_probs, axis=-1))


def select_hard_negatives(similarity, positives, valid=None, gumbel_noise=None):
    """Picks one negative candidate per query, favouring the most similar ones.

    With `gumbel_noise=None` this is the arg-max over non-positive candidates. With noise
    (`jax.random.gumbel`, shape `[B, K]`) it samples from `softmax(similarity)` restricted to
    negatives (the Gumbel-max trick), which is BLIP's `torch.multinomial(softmax(sim))` sampling
    in a form that is deterministic given the noise.

    Args:
      similarity: `[B, K]` scores (logits, e.g. `q.c / temperature`).
      positives: `[B, K]` bool, never selected.
      valid: Optional `[K]` bool, False columns never selected.
      gumbel_noise: Optional `[B, K]` standard Gumbel noise.

    Returns:
      `[B]` int32 candidate indices.
    """
    allowed = ~positives
    if valid is not None:
        allowed = allowed & valid[None, :]
    scores = similarity.astype(jnp.float32)
    if gumbel_noise is not None:
        scores = scores + gumbel_noise
    return jnp.argmax(jnp.where(allowed, scores, -jnp.inf), axis=-1).astype(jnp.int32)


def matching_loss(logits, labels):
    """Mean 2-way cross-entropy of `[N, 2]` matching logits against `[N]` labels (1 = match)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1))


def ema_update(momentum, online, coefficient: float):
    """`m <- coefficient * m + (1 - coefficient) * p` leaf by leaf (ALBEF `_momentum_update`)."""
    return jax.tree.map(
        lambda m, p: (
            coefficient * m + (1.0 - coefficient) * jax.lax.stop_gradient(p).astype(m.dtype)
        ),
        momentum,
        online,
    )


def enqueue(queue, pointer, items):
    """Writes a batch into a ring-buffer queue at `pointer` and advances the pointer.

    Args:
      queue: `[Q, ...]` queue; `Q` must be a multiple of the batch size (`check_queue_size`).
      pointer: Scalar int32 slot where the batch's first item goes.
      items: `[B, ...]` new entries; they replace the oldest ones (dequeue = overwrite).

    Returns:
      `(new_queue, (pointer + B) % Q)`.
    """
    check_queue_size(queue.shape[0], items.shape[0])
    start = (pointer,) + (0,) * (queue.ndim - 1)
    new_queue = jax.lax.dynamic_update_slice(queue, items.astype(queue.dtype), start)
    return new_queue, (pointer + items.shape[0]) % queue.shape[0]


def queue_valid_mask(queue_size: int, filled):
    """[Q] bool: slots written at least once. Writes start at slot 0, so these are `< filled`."""
    return jnp.arange(queue_size) < filled


def last_token_index(tokens, token_id: int, pad_id: int = 0):
    """[B, L] -> [B] index of the last `token_id` in each row.

    Rows without `token_id` (truncated sequences) fall back to their last non-pad token, so the
    matching head still reads the final state the decoder saw.
    """
    positions = jnp.arange(tokens.shape[1])[None, :]
    last_eos = jnp.max(jnp.where(tokens == token_id, positions, -1), axis=-1)
    last_real = jnp.max(jnp.where(tokens != pad_id, positions, 0), axis=-1)
    return jnp.where(last_eos >= 0, last_eos, last_real).astype(jnp.int32)
