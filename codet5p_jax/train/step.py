"""The pure training step: `(state, batch, rng) -> (state, metrics)`.

One optimizer update per call. Gradient accumulation is a wrapper (`accumulate_gradients`) that
splits the batch into microbatches and averages their gradients with `lax.scan`, so peak
activation memory is that of one microbatch and the update is identical in expectation.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from codet5p_jax.train.state import TrainState
from codet5p_jax.train.trainable import Partition

LossFn = Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]


def _split_microbatches(batch: dict[str, jax.Array], num: int) -> dict[str, jax.Array]:
    """`[B, ...]` -> `[num, B / num, ...]` (strided, so every microbatch spans all data shards)."""

    def split(x):
        if x.shape[0] % num:
            raise ValueError(
                f"Batch of {x.shape[0]} rows is not divisible into {num} microbatches."
            )
        # Rows i, i+num, ... form microbatch i: each device keeps its local rows (no reshuffle).
        return x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def accumulate_gradients(
    loss_fn: LossFn, params, extra, batch, rng, num_microbatches: int
) -> tuple[jax.Array, Any, dict[str, jax.Array], Any]:
    """Loss, gradients and metrics of `batch`, averaged over `num_microbatches` slices.

    `extra` (objective state such as queues) is threaded through the microbatches in order.

    Returns:
      `(loss, grads, metrics, new_extra)`.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_microbatches <= 1:
        (loss, (metrics, new_extra)), grads = grad_fn(params, extra, batch, rng)
        return loss, grads, metrics, new_extra

    micro = _split_microbatches(batch, num_microbatches)
    rngs = jax.random.split(rng, num_microbatches)

    def body(carry, xs):
        grads_acc, extra_c = carry
        mb, r = xs
        (loss, (metrics, extra_n)), grads = grad_fn(params, extra_c, mb, r)
        grads_acc = jax.tree.map(jnp.add, grads_acc, grads)
        return (grads_acc, extra_n), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads, new_extra), (losses, metrics) = jax.lax.scan(body, (zeros, extra), (micro, rngs))
    grads = jax.tree.map(lambda g: g / num_microbatches, grads)
    return losses.mean(), grads, jax.tree.map(jnp.mean, metrics), new_extra


def _global_norm_f32(tree) -> jax.Array:
    """Global L2 norm accumulated in float32 (frozen leaves may be stored in bfloat16)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    num_microbatches: int = 1,
    learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None,
    partition: Partition | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Applies one optimizer update.

    Args:
      state: Current `TrainState`.
      batch: Global batch (feature-converter keys).
      rng: Base PRNG key of the run; the step's key is `fold_in(rng, state.step)`, so a resumed
        run draws exactly the same dropout masks as an uninterrupted one.
      loss_fn: `Objective.loss_fn` (`enable_dropout=True` is its default).
      tx: The optax transformation (clipping, optimizer, trainable mask).
      num_microbatches: Gradient-accumulation factor.
      learning_rate_fn: Schedule, for the `learning_rate` metric.
      partition: The trainable / frozen split (`optimizers.make_optimizer(split=True)`): the
        loss is differentiated with respect to the trainable subtree only and `tx` (built for
        that subtree) updates it; frozen leaves pass through bit-identical. None: all train.

    Returns:
      `(new_state, metrics)`; metrics include `grad_norm` (before clipping) and `param_norm`.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    if partition is None:
        trained, frozen, sub_loss = state.params, None, loss_fn
    else:
        trained, frozen = partition.split(state.params)

        def sub_loss(t, *args, **kwargs):
            # Frozen leaves enter as constants: no cotangent (and no buffer) is ever made for
            # them, and the backward pass stops below the deepest trainable parameter.
            return loss_fn(partition.merge(t, frozen), *args, **kwargs)

    loss, grads, metrics, new_extra = accumulate_gradients(
        sub_loss, trained, state.extra, batch, step_rng, num_microbatches
    )
    updates, opt_state = tx.update(grads, state.opt_state, trained)
    trained = optax.apply_updates(trained, updates)
    params = trained if partition is None else partition.merge(trained, frozen)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["param_norm"] = _global_norm_f32(params)
    if learning_rate_fn is not None:
        metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, extra=new_extra
    )
    return new_state, metrics
