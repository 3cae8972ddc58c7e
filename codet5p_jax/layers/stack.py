"""Applies N identical blocks: unrolled, or scanned with `nn.scan`, optionally rematerialised.

Scan and remat are config switches here, never inside layer bodies (t5x `scalable_t5` style).
"""

import flax.linen as nn
import jax

from codet5p_jax.config import T5Config

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def run_layers(layer_cls, cfg: T5Config, num_layers: int, x, *args, **attrs):
    """Runs `num_layers` blocks of `layer_cls` on `x`; call inside a compact method.

    Args:
      layer_cls: A Module class with fields `(config, scanned, **attrs)` whose `__call__(x,
        *args)` returns `x` (or `(x, None)` when `scanned`).
      cfg: The model config; `scan_layers` and `remat_policy` pick the execution strategy.
      num_layers: Number of blocks.
      x: `[B, L, D]` input of the first block.
      *args: Arrays (or None) passed unchanged to every block.
      **attrs: Static module attributes (`deterministic`, `decode`).

    Returns:
      The output of the last block. Unscanned params are `layers_{i}`; scanned params are
      `layers` with a leading `[num_layers]` axis named "layers".
    """
    if cfg.remat_policy != "none":
        layer_cls = nn.remat(
            layer_cls, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers
        )
    if not cfg.scan_layers:
        for i in range(num_layers):
            x = layer_cls(cfg, scanned=False, name=f"layers_{i}", **attrs)(x, *args)
        return x
    scanned = nn.scan(
        layer_cls,
        # Cache leaves are [B, S, N, H]: stack them at axis 1 so batch stays the leading axis.
        variable_axes={"params": 0, "cache": 1},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * len(args),
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    x, _ = scanned(cfg, scanned=True, name="layers", **attrs)(x, *args)
    return x
