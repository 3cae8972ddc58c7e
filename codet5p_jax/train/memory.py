"""Per-device memory of a training state, counted from shapes and shardings (nothing allocated).

The trainer prints this at start and `codet5p plan` prints it beside XLA's own numbers, so a run
that would not fit says so before any weight is loaded. Bytes per device are the bytes of each
leaf's shard (`sharding.shard_shape`) summed over the tree; with even shardings every device
holds the same amount.
"""

import math

import jax
import numpy as np

GIB = 1 << 30


def shard_bytes(leaf) -> int:
    """Bytes of one device's shard of `leaf` (an array or `ShapeDtypeStruct`)."""
    shape = tuple(leaf.shape)
    sharding = getattr(leaf, "sharding", None)
    if sharding is not None and hasattr(sharding, "shard_shape"):
        shape = sharding.shard_shape(shape)
    return math.prod(shape) * np.dtype(leaf.dtype).itemsize


def tree_bytes(tree, per_device: bool = True) -> int:
    """Bytes of every leaf of `tree`, per device (shards) or in total."""
    leaves = jax.tree.leaves(tree)
    if per_device:
        return sum(shard_bytes(x) for x in leaves)
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves)


def count(tree) -> int:
    """Number of scalars in `tree`."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def state_bytes(abstract_state, partition=None) -> dict[str, int]:
    """Per-device bytes of a `TrainState`'s parts, and the gradient buffers its step makes.

    Args:
      abstract_state: `TrainState` of arrays or `ShapeDtypeStruct`s carrying their sharding.
      partition: The trainable / frozen split (`train.trainable.Partition`), or None (all
        trainable). Gradients exist for the trainable leaves only, in their dtype and sharding.

    Returns:
      `{"params", "params_trainable", "params_frozen", "opt_state", "grads", "extra"}` in bytes
      per device, plus `"params_total"` (bytes of the whole tree, all devices together) and
      `"num_params"`, `"num_trainable"` (global scalar counts).
    """
    params = abstract_state.params
    if partition is None:
        trained, frozen = params, {}
    else:
        trained, frozen = partition.split(params)
    return {
        "params": tree_bytes(params),
        "params_trainable": tree_bytes(trained),
        "params_frozen": tree_bytes(frozen),
        "opt_state": tree_bytes(abstract_state.opt_state),
        "grads": tree_bytes(trained),
        "extra": tree_bytes(abstract_state.extra),
        "params_total": tree_bytes(params, per_device=False),
        "num_params": count(params),
        "num_trainable": count(trained),
    }


def gib(n: float) -> str:
    """`1.50 GiB` (MiB / KiB below a GiB / MiB)."""
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _dtypes(tree) -> str:
    names = sorted({np.dtype(x.dtype).name for x in jax.tree.leaves(tree)})
    return "/".join(names) or "-"


def describe(report: dict[str, int], abstract_state=None, partition=None) -> str:
    """One line: `per-device bytes: parameters ... , optimizer state ..., gradients ...`."""
    dtypes = ("", "")
    if abstract_state is not None:
        if partition is None:
            trained, frozen = abstract_state.params, {}
        else:
            trained, frozen = partition.split(abstract_state.params)
        dtypes = (f" {_dtypes(trained)}", f" {_dtypes(frozen)}")
    return (
        f"per-device bytes: parameters {gib(report['params'])} "
        f"(trainable {gib(report['params_trainable'])}{dtypes[0]}, "
        f"frozen {gib(report['params_frozen'])}{dtypes[1]}), "
        f"optimizer state {gib(report['opt_state'])}, gradients {gib(report['grads'])}; "
        f"{report['num_trainable']:,} of {report['num_params']:,} parameters train"
    )
