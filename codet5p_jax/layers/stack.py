"""Applies N identical blocks: unrolled, or scanned with `nn.scan`, optionally rematerialised.

Scan and remat are arguments here, never switches inside layer bodies (t5x `scalable_t5` style).
"""

import flax.linen as nn
import jax

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def run_layers(
    layer_cls, num_layers: int, x, *args, scan: bool, remat_policy: str = "none", **attrs
):
    """Runs `num_layers` blocks of `layer_cls` on `x`; call inside a compact method.

    Args:
      layer_cls: A Module class with a field `scanned: bool` whose `__call__(x, *args)` returns
        `x` (or `(x, None)` when `scanned`).
      num_layers: Number of blocks.
      x: `[B, L, D]` input of the first block.
      *args: Arrays (or None) passed unchanged to every block.
      scan: Run the blocks with `nn.scan` (params stacked on a leading axis).
      remat_policy: "none", or a key of `REMAT_POLICIES`: per-block rematerialisation.
      **attrs: Module attributes of every block (`config`, `deterministic`, `decode`).

    Returns:
      The output of the last block. Unscanned params are `layers_{i}`; scanned params are
      `layers` with a leading `[num_layers]` axis named "layers".
    """
    if remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)
    if not scan:
        for i in range(num_layers):
            x = layer_cls(scanned=False, name=f"layers_{i}", **attrs)(x, *args)
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
    x, _ = scanned(scanned=True, name="layers", **attrs)(x, *args)
    return x
