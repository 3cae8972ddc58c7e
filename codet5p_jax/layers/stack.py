"""Applies a stack of blocks: uniform ones unrolled or scanned (`nn.scan`), then differing ones.

Scan and remat are arguments here, never switches inside layer bodies (t5x `scalable_t5` style).
A stack may end in blocks that differ from the rest (CodeT5+ 2B-16B: only the last decoder block
has cross-attention); those run unrolled after the uniform ones, which can still be scanned.

Param naming (inside the calling module), for `num_layers` uniform blocks and `len(tail)` tail
blocks:
  * unrolled: `layers_0` ... `layers_{num_layers - 1}`, then the tail blocks;
  * scanned: one `layers` subtree whose leaves have a leading `[num_layers]` axis (logical axis
    "layers"), then the tail blocks;
  * tail block `j` is always `layers_{num_layers + j}`, its index in the whole stack, so a fully
    unrolled stack has the same names whether or not its last blocks are tail blocks.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _remat(layer_cls, remat_policy: str, prevent_cse: bool):
    if remat_policy == "none":
        return layer_cls
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"Unknown remat_policy {remat_policy!r}")
    return nn.remat(layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=prevent_cse)


def run_layers(
    layer_cls,
    num_layers: int,
    x,
    *args,
    scan: bool,
    remat_policy: str = "none",
    tail: Sequence[tuple[Any, Mapping[str, Any]]] = (),
    **attrs,
):
    """Runs `num_layers` uniform blocks of `layer_cls` on `x`, then the `tail` blocks.

    Call inside a compact method; params are named as in the module docstring.

    Args:
      layer_cls: A Module class with a field `scanned: bool` whose `__call__(x, *args)` returns
        `x` (or `(x, None)` when `scanned`).
      num_layers: Number of uniform blocks (may be 0).
      x: `[B, L, D]` input of the first block.
      *args: Arrays (or None) passed unchanged to every block, tail blocks included.
      scan: Run the uniform blocks with `nn.scan` (params stacked on a leading axis).
      remat_policy: "none", or a key of `REMAT_POLICIES`: per-block rematerialisation.
      tail: Blocks run unrolled after the uniform ones, each `(block_cls, extra_attrs)`;
        `extra_attrs` are added to (and override) `attrs`, e.g. `{"cross_attention": True}`.
      **attrs: Module attributes of every block (`config`, `deterministic`, `decode`).

    Returns:
      The output of the last block.
    """
    if num_layers and not scan:
        block_cls = _remat(layer_cls, remat_policy, prevent_cse=True)
        for i in range(num_layers):
            x = block_cls(scanned=False, name=f"layers_{i}", **attrs)(x, *args)
    elif num_layers:
        # Inside a scan, CSE across iterations is impossible, so remat need not prevent it.
        block_cls = _remat(layer_cls, remat_policy, prevent_cse=False)
        scanned = nn.scan(
            block_cls,
            # Cache leaves are [B, N, H, S]: stack them at axis 1 so batch stays the leading axis.
            variable_axes={"params": 0, "cache": 1},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * len(args),
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, _ = scanned(scanned=True, name="layers", **attrs)(x, *args)
    for j, (tail_cls, extra_attrs) in enumerate(tail):
        block_cls = _remat(tail_cls, remat_policy, prevent_cse=True)
        block_attrs = {**attrs, **extra_attrs}
        x = block_cls(scanned=False, name=f"layers_{num_layers + j}", **block_attrs)(x, *args)
    return x
