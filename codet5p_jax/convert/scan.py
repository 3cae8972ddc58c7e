"""Scanned <-> unscanned parameter layouts.

Unscanned stacks hold `layers_0 ... layers_{n-1}`; scanned ones (`cfg.scan_layers`, `nn.scan`)
hold one `layers` subtree whose leaves have a leading `[n]` axis (see docs/DESIGN.md). Both are
exact: stacking and slicing copy bits, never cast.
"""

from collections.abc import Mapping

import jax
import numpy as np

from codet5p_jax.config import T5Config
from codet5p_jax.convert.mapping import ConversionError


def _stacks(cfg: T5Config) -> dict[str, int]:
    """Stack name -> number of blocks."""
    stacks = {"encoder": cfg.num_encoder_layers}
    if cfg.has_decoder:
        stacks["decoder"] = cfg.num_decoder_layers
    return stacks


def is_scanned(params: Mapping) -> bool:
    """Whether `params` uses the scanned layout (an `encoder/layers` subtree)."""
    return "layers" in params.get("encoder", {})


def scan_params(params: Mapping, cfg: T5Config, stacks: Mapping[str, int] | None = None) -> dict:
    """Unscanned -> scanned: stacks `layers_{i}` into `layers` with a leading layer axis.

    Args:
      params: Unscanned param tree (nested dicts of arrays).
      cfg: The model config (gives the number of blocks per stack).
      stacks: Stack name -> number of uniform blocks, for other families (default: the T5
        config's stacks). Blocks past that number (a stack's unrolled tail) are left alone.

    Returns:
      A new tree; untouched subtrees are shared with `params`.

    Raises:
      ConversionError: If a block is missing or the blocks' trees differ.
    """
    out = dict(params)
    for stack, num_layers in (stacks or _stacks(cfg)).items():
        sub = dict(params[stack])
        names = [f"layers_{i}" for i in range(num_layers)]
        missing = [n for n in names if n not in sub]
        if missing:
            raise ConversionError(f"Cannot scan {stack}: missing blocks {missing}")
        blocks = [sub.pop(n) for n in names]
        structure = jax.tree.structure(blocks[0])
        for name, block in zip(names, blocks, strict=True):
            if jax.tree.structure(block) != structure:
                raise ConversionError(f"Cannot scan {stack}: {name} differs from layers_0")
        sub["layers"] = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *blocks)
        out[stack] = sub
    return out


def unscan_params(params: Mapping, cfg: T5Config, stacks: Mapping[str, int] | None = None) -> dict:
    """Scanned -> unscanned: slices `layers` into `layers_{i}`.

    Args:
      params: Scanned param tree.
      cfg: The model config.
      stacks: As for `scan_params`.

    Returns:
      A new tree; untouched subtrees are shared with `params`.

    Raises:
      ConversionError: If a stack has no `layers` subtree or a leaf's leading axis is not the
        number of blocks.
    """
    out = dict(params)
    for stack, num_layers in (stacks or _stacks(cfg)).items():
        sub = dict(params[stack])
        if "layers" not in sub:
            raise ConversionError(f"Cannot unscan {stack}: no 'layers' subtree")
        stacked = sub.pop("layers")
        for path, leaf in jax.tree_util.tree_leaves_with_path(stacked):
            if np.shape(leaf)[:1] != (num_layers,):
                name = jax.tree_util.keystr(path)
                raise ConversionError(
                    f"Cannot unscan {stack}/layers{name}: leading axis of shape "
                    f"{np.shape(leaf)} is not the {num_layers} blocks"
                )
        for i in range(num_layers):
            sub[f"layers_{i}"] = jax.tree.map(lambda x, i=i: np.asarray(x)[i], stacked)
        out[stack] = sub
    return out
