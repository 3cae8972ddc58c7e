"""Token-level losses and accuracies with loss weights (t5x `losses.py` conventions).

All functions work in float32 whatever the logits' dtype (the loss is a float32 island) and
return *sums* plus the weight sum, so callers can normalise per batch, per objective or across
microbatches without re-deriving counts.

Legend: B batch, T target length, V vocabulary.
"""

import jax
import jax.numpy as jnp
import optax


def compute_weighted_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array | None = None,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Per-token cross-entropy (+ optional label smoothing and z-loss), weighted.

    Args:
      logits: `[B, T, V]` unnormalised scores.
      targets: `[B, T]` int target ids.
      weights: `[B, T]` loss weights (0 = ignore, e.g. padding); None = all ones.
      label_smoothing: Mass spread uniformly over the vocabulary (t5x convention: the
        confidence is `1 - label_smoothing`; the constant entropy term is subtracted so a perfect
        prediction has loss 0).
      z_loss: Coefficient of `log(Z)^2` (PaLM/t5x auxiliary loss that keeps logits small).

    Returns:
      `(token_losses [B, T], token_z_losses [B, T])`, both already multiplied by `weights`.
    """
    logits = logits.astype(jnp.float32)  # float32 island: log-softmax over a 32k vocabulary
    vocab = logits.shape[-1]
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1) if vocab > 1 else 0.0
    soft = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
    log_z = jax.nn.logsumexp(logits, axis=-1)
    losses = optax.softmax_cross_entropy(logits, soft)
    if label_smoothing:
        # Entropy of the smoothed target: subtracting it makes the minimum loss 0 (as t5x).
        normalizer = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
        losses = losses - normalizer
    z_losses = z_loss * jnp.square(log_z)
    if weights is None:
        weights = jnp.ones_like(targets)
    weights = weights.astype(jnp.float32)
    return (losses + z_losses) * weights, z_losses * weights


def compute_weighted_accuracy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """`[B, T]` float32: 1 where the arg-max prediction equals the target, times `weights`."""
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return correct if weights is None else correct * weights.astype(jnp.float32)


def sum_by_group(values: jax.Array, group_ids: jax.Array, num_groups: int) -> jax.Array:
    """`[B, ...]` values summed over all but the batch axis, then per group id: `[num_groups]`.

    Group ids outside `[0, num_groups)` contribute nothing.
    """
    per_example = values.reshape(values.shape[0], -1).sum(axis=-1)
    one_hot = jax.nn.one_hot(group_ids, num_groups, dtype=per_example.dtype)  # [B, G]
    return per_example @ one_hot
