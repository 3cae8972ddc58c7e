"""Optax optimizers, learning-rate schedules and trainable-parameter masks (gin-configurable).

* `make_schedule`: linear warm-up into constant / linear / cosine / rsqrt decay.
* `make_optimizer`: global-norm clipping -> AdamW (paper: weight decay 0.1) or Adafactor, with
  weight decay skipped on 1-D params (norm scales, biases) and a named trainable mask.
* `TRAINABLE_PRESETS`: which parameter groups train (groups are the model family's,
  `Family.param_groups`). CodeT5+ starts its compute-efficient runs from frozen off-the-shelf
  LMs (paper §3.3: "freeze the deep decoder, train the shallow encoder and cross-attention");
  here the preset names the trainable part. Frozen leaves get
  `optax.set_to_zero()` and keep no optimizer state.

Gradient accumulation is microbatching in `train/step.py` (one optimizer update per step).
"""

import re

import jax
import jax.numpy as jnp
import optax

import gin
from codet5p_jax.train import trainable as trainable_lib

# Preset -> the model family's parameter groups (`Family.param_groups`) that train. Groups, not
# module-name patterns, so a family names its own parts and every preset works for it.
TRAINABLE_PRESETS: dict[str, tuple[str, ...]] = {
    "all": (),  # everything, whatever the groups
    # Paper §3.3 / README "shallow encoder and cross-attention layers trainable".
    "encoder_and_cross_attention": ("encoder", "cross_attention"),
    "encoder_only": ("encoder",),
    "decoder_only": ("decoder",),
    # Stage-2 style heads-only probing: projection/matching heads and the learned temperature.
    "heads_only": ("heads",),
}

SCHEDULES = ("constant", "linear", "cosine", "rsqrt")


def param_path(path) -> str:
    """ "/"-joined dict keys of a pytree key path (`encoder/layers_0/mlp/wi/kernel`)."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def trainable_mask(params, preset: str = "all", param_groups=None):
    """Boolean tree: True where the leaf is trained under `preset`.

    Args:
      params: Parameter tree (arrays or shape structs).
      preset: A `TRAINABLE_PRESETS` name, or "+"-joined group names (e.g. "encoder+heads").
      param_groups: Group name -> regular expressions over "/"-joined param paths, the model
        family's `param_groups` (default: the T5 family's).

    Raises:
      ValueError: for an unknown preset or group, or one that selects no parameter (a typo
        would otherwise freeze the whole model silently).
    """
    if param_groups is None:
        from codet5p_jax import families

        param_groups = families.get("t5").param_groups
    groups = TRAINABLE_PRESETS.get(preset)
    if groups is None:
        groups = tuple(g for g in preset.split("+") if g)
        unknown = [g for g in groups if g not in param_groups]
        if unknown or not groups:
            raise ValueError(
                f"Unknown trainable preset {preset!r}; known presets: "
                f"{', '.join(TRAINABLE_PRESETS)}, or '+'-joined groups of this model: "
                f"{', '.join(param_groups)}"
            )
    missing = [g for g in groups if g not in param_groups]
    if missing:
        raise ValueError(f"Trainable preset {preset!r} needs groups {missing} this model lacks.")
    patterns = [re.compile(p) for g in groups for p in param_groups[g]] or [re.compile(".*")]
    mask = jax.tree_util.tree_map_with_path(
        lambda path, _: any(p.search(param_path(path)) for p in patterns), params
    )
    if not any(jax.tree.leaves(mask)):
        raise ValueError(f"Trainable preset {preset!r} matches no parameter of this model.")
    return mask


def decay_mask(params):
    """Weight decay on matrices only: 1-D leaves (norm scales, biases, temperature) are exempt."""
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


@gin.configurable
def make_schedule(
    *,
    name: str = "cosine",
    peak_value: float = 2e-4,
    warmup_steps: int = 1000,
    total_steps: int = 100_000,
    end_value_ratio: float = 0.0,
) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_value`, then a decay over the remaining steps.

    Args:
      name: "constant", "linear" (to `end_value_ratio * peak`), "cosine" (same end) or "rsqrt"
        (`peak * sqrt(warmup / step)` after warm-up, as T5).
      peak_value: Learning rate at the end of warm-up.
      warmup_steps: Steps of linear warm-up (0 = none).
      total_steps: Total training steps (the decay ends there).
      end_value_ratio: Final learning rate as a fraction of the peak.

    Returns:
      An optax schedule `step -> learning rate`.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"Need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}."
        )
    end = peak_value * end_value_ratio
    decay_steps = max(total_steps - warmup_steps, 1)
    if name == "constant":
        decay = optax.constant_schedule(peak_value)
    elif name == "linear":
        decay = optax.linear_schedule(peak_value, end, decay_steps)
    elif name == "cosine":
        decay = optax.cosine_decay_schedule(peak_value, decay_steps, alpha=end_value_ratio)
    else:
        w = max(warmup_steps, 1)
        decay = lambda step: peak_value * jnp.sqrt(w / jnp.maximum(step + w, w))
    if not warmup_steps:
        return decay
    warmup = optax.linear_schedule(0.0, peak_value, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


@gin.configurable(denylist=["param_groups", "split"])
def make_optimizer(
    params,
    *,
    name: str = "adamw",
    learning_rate: optax.Schedule | float | None = None,
    weight_decay: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_grad_norm: float | None = 1.0,
    trainable: str = "all",
    frozen_dtype: str | None = "bfloat16",
    param_groups=None,
    split: bool = False,
):
    """The gradient transformation for `params` (a tree of arrays or shape structs).

    Args:
      params: Parameter tree (only its structure and ranks are used).
      name: "adamw" or "adafactor".
      learning_rate: A schedule or constant; None = `make_schedule()` with its gin bindings.
      weight_decay: Decoupled weight decay (AdamW; paper 0.1). For Adafactor it is the
        `weight_decay_rate`.
      b1, b2, eps: Adam moment decay rates and epsilon (AdamW only).
      clip_grad_norm: Global-norm clipping threshold (None = off).
      trainable: A `TRAINABLE_PRESETS` name or "+"-joined group names; other leaves are
        frozen (no optimizer state).
      frozen_dtype: Storage dtype of frozen leaves when `split` (paper §4: frozen decoder in
        half precision, trainable weights in float32); None keeps their dtype.
      param_groups: The model family's `param_groups` (the trainer passes them; not gin).
      split: Return `(tx, partition)` with `tx` built for the *trainable subtree only*
        (`partition.split(params)[0]`): frozen leaves then have neither optimizer state nor
        gradients (the trainer's path). False: one masked `tx` over the whole tree.

    Returns:
      An `optax.GradientTransformation`, or `(tx, trainable.Partition)` when `split`.
    """
    lr = make_schedule() if learning_rate is None else learning_rate
    if name == "adamw":
        inner = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
    elif name == "adafactor":
        inner = optax.adafactor(
            lr, weight_decay_rate=weight_decay or None, weight_decay_mask=decay_mask
        )
    else:
        raise ValueError(f"Unknown optimizer {name!r}; known: adamw, adafactor")
    chain = [optax.clip_by_global_norm(clip_grad_norm)] if clip_grad_norm else []
    tx = optax.chain(*chain, inner)
    if split:
        mask = trainable_mask(params, trainable, param_groups)
        return tx, trainable_lib.make_partition(mask, frozen_dtype)
    if trainable == "all":
        return tx
    mask = trainable_mask(params, trainable, param_groups)
    labels = jax.tree.map(lambda m: "train" if m else "freeze", mask)
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
