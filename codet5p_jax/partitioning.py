"""Device meshes, logical-axis rules and shape-first sharded initialisation.

The mesh has three named axes, as in t5x/maxtext:

* `data`   - pure data parallelism (weights replicated along it);
* `fsdp`   - data parallelism whose weights (and optimizer state) are sharded along it (ZeRO-3);
* `tensor` - tensor (model) parallelism: heads, MLP width and vocabulary split across devices.

Weights and activations carry *logical* axis names (`batch, length, embed, heads, kv, mlp, vocab,
relpos_buckets, layers`, see docs/DESIGN.md); a rule preset maps each logical name to mesh axes.
Flax skips a mesh axis that an earlier dimension of the same array already uses, so activations
`("batch", "length", "embed")` keep `embed` unsharded when `batch` took `fsdp`.

Typical use::

    mesh = make_mesh(data=-1, fsdp=2, tensor=2)
    rules = AXIS_RULES["fsdp_tp"]
    params, shardings = sharded_init(lambda rng: model.init(rng, *args)["params"], mesh, rules, rng)
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gin

MESH_AXES = ("data", "fsdp", "tensor")
# The mesh axes a global batch is split over; the data-parallel size is their product.
BATCH_MESH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Logical -> mesh axis presets. Unlisted logical names (kv, length, vocab, relpos_buckets,
# layers) are replicated: head_dim is tiny, sequence sharding is not used, the relative-position
# table is [heads, 32] and the scanned `layers` axis must stay whole for `nn.scan`.
AXIS_RULES: dict[str, tuple[tuple[str, str | tuple[str, ...] | None], ...]] = {
    # Plain data parallelism: every weight replicated, the batch split over data (and fsdp, so a
    # mesh with fsdp > 1 still uses every device for the batch).
    "dp": (("batch", BATCH_MESH_AXES),),
    # ZeRO-3 style: the batch over data x fsdp, every weight split along its `embed` (d_model)
    # dimension over fsdp; XLA all-gathers a layer's weights just before use.
    "fsdp": (
        ("batch", BATCH_MESH_AXES),
        ("embed", "fsdp"),
    ),
    # FSDP plus Megatron-style tensor parallelism: heads and MLP width over `tensor`, so
    # attention/MLP need one all-reduce per block; embed stays on fsdp for the weights. `vocab` is
    # not split: the stage-2 vocabulary (32103 rows) is odd, so no tensor size divides it.
    "fsdp_tp": (
        ("batch", BATCH_MESH_AXES),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("mlp", "tensor"),
    ),
}


def get_axis_rules(name: str) -> tuple[tuple[str, Any], ...]:
    """The rule preset `name`; raises with the known names when it does not exist."""
    if name not in AXIS_RULES:
        raise ValueError(f"Unknown axis-rule preset {name!r}; known: {', '.join(AXIS_RULES)}")
    return AXIS_RULES[name]


def _resolve_shape(
    shape: Sequence[int], num_devices: int, what: str, unit: str = "devices"
) -> tuple[int, ...]:
    """Replaces a single -1 in `shape` so that the product equals `num_devices` (of `unit`)."""
    shape = [int(s) for s in shape]
    if shape.count(-1) > 1:
        raise ValueError(f"At most one {what} mesh dimension may be -1, got {shape}.")
    known = int(np.prod([s for s in shape if s != -1]))
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"{what} mesh dimensions must be positive or -1, got {shape}.")
    if -1 in shape:
        if num_devices % known:
            raise ValueError(
                f"{num_devices} devices cannot fill a {what} mesh {shape}: "
                f"{num_devices} is not divisible by {known}."
            )
        shape[shape.index(-1)] = num_devices // known
    if int(np.prod(shape)) != num_devices:
        raise ValueError(
            f"The {what} mesh {dict(zip(MESH_AXES, shape, strict=True))} needs "
            f"{int(np.prod(shape))} {unit} but {num_devices} are available."
        )
    return tuple(shape)


@gin.configurable
def make_mesh(
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    *,
    dcn_data: int = 1,
    dcn_fsdp: int = 1,
    dcn_tensor: int = 1,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """Builds the `("data", "fsdp", "tensor")` mesh.

    `data`, `fsdp`, `tensor` are the shape *within* a slice (ICI); `dcn_*` the number of slices
    along each axis (multi-slice over the data-centre network). The full mesh axis sizes are the
    products (e.g. `data=4, dcn_data=2` -> 8 data-parallel replicas). One ICI dimension may be -1
    to take all remaining devices of a slice.

    Args:
      data: Pure data-parallel size per slice (-1: infer).
      fsdp: Fully-sharded data-parallel size per slice.
      tensor: Tensor-parallel size per slice.
      dcn_data: Slices along `data`.
      dcn_fsdp: Slices along `fsdp`.
      dcn_tensor: Slices along `tensor` (rarely useful: tensor parallelism wants fast links).
      devices: Devices to use (default `jax.devices()`, all processes).

    Returns:
      A `jax.sharding.Mesh` with axis names `MESH_AXES`.

    Raises:
      ValueError: when the shapes do not multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    dcn_shape = _resolve_shape(
        (dcn_data, dcn_fsdp, dcn_tensor), _num_slices(devices), "DCN", unit="slices"
    )
    per_slice = len(devices) // int(np.prod(dcn_shape))
    ici_shape = _resolve_shape((data, fsdp, tensor), per_slice, "ICI")
    if int(np.prod(dcn_shape)) > 1:
        device_array = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
    elif devices[0].platform == "cpu":
        # CPU devices have no physical topology; keep jax.devices() order (deterministic).
        device_array = np.asarray(devices, dtype=object).reshape(ici_shape)
    else:
        device_array = mesh_utils.create_device_mesh(ici_shape, devices)
    return Mesh(device_array, MESH_AXES)


def _num_slices(devices: Sequence[Any]) -> int:
    """Number of TPU slices among `devices` (1 on CPU/GPU, which have no `slice_index`)."""
    return len({getattr(d, "slice_index", 0) for d in devices})


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways a global batch is split (product of the `BATCH_MESH_AXES` sizes)."""
    return int(np.prod([mesh.shape[a] for a in BATCH_MESH_AXES]))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises when `batch_size` cannot be split evenly over the data-parallel devices/processes."""
    dp = data_parallel_size(mesh)
    if batch_size % dp:
        raise ValueError(
            f"BATCH_SIZE={batch_size} is not divisible by the data-parallel size {dp} "
            f"(mesh {dict(mesh.shape)}: batch is split over {BATCH_MESH_AXES})."
        )
    if batch_size % jax.process_count():
        raise ValueError(
            f"BATCH_SIZE={batch_size} is not divisible by the {jax.process_count()} processes."
        )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of `[B, ...]` batch arrays: the leading axis over data x fsdp."""
    return NamedSharding(mesh, PartitionSpec(BATCH_MESH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def is_box(x: Any) -> bool:
    """True for a flax logical-partitioning box (`nn.Partitioned` / `nn.LogicallyPartitioned`)."""
    return isinstance(x, nn.Partitioned)


def logical_specs(boxed_tree: Any) -> Any:
    """Logical `PartitionSpec`s of a boxed tree (`PartitionSpec()` for unboxed leaves)."""
    return nn.get_partition_spec(boxed_tree)


def logical_to_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """`NamedSharding`s, one per (unboxed) leaf of `boxed_tree`, from its logical axis names.

    Args:
      boxed_tree: A tree whose leaves are `nn.Partitioned` boxes (or plain arrays / shape structs,
        which are replicated). Abstract trees from `jax.eval_shape` work.
      mesh: The device mesh.
      rules: Logical -> mesh axis rules, e.g. `AXIS_RULES["fsdp"]`.

    Returns:
      A tree with the structure of `nn.unbox(boxed_tree)` holding `NamedSharding`s.
    """
    specs = logical_specs(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def unbox_abstract(boxed_tree: Any) -> Any:
    """`nn.unbox` that also works on `jax.eval_shape` output (boxes of ShapeDtypeStructs)."""
    return jax.tree.map(lambda x: x.unbox() if is_box(x) else x, boxed_tree, is_leaf=is_box)


def rebox(template: Any, values: Any) -> Any:
    """Puts the plain arrays `values` back into the boxes of `template` (same structure)."""
    leaves, treedef = jax.tree.flatten(template, is_leaf=is_box)
    flat_values = treedef.flatten_up_to(values)
    boxed = [
        t.replace_boxed(v) if is_box(t) else v for t, v in zip(leaves, flat_values, strict=True)
    ]
    return jax.tree.unflatten(treedef, boxed)


def sharded_init(
    init_fn: Callable[..., Any], mesh: Mesh, rules: Rules, *args: Any
) -> tuple[Any, Any, Any]:
    """Initialises a boxed tree directly into its shards (never whole on one device).

    Shape-first, as big_vision: `jax.eval_shape(init_fn)` gives the abstract boxed tree, its
    logical names give the `NamedSharding`s, then `jax.jit(init_fn, out_shardings=...)` makes
    each device compute only its own shard.

    Args:
      init_fn: `init_fn(*args)` returns a tree of `nn.Partitioned` boxes (e.g. `model.init(...)
        ["params"]`). Plain-array leaves are replicated.
      mesh: The device mesh.
      rules: Logical -> mesh axis rules.
      *args: Arguments to `init_fn` (e.g. a PRNG key).

    Returns:
      `(values, shardings, abstract_boxed)`: plain sharded arrays, their `NamedSharding`s and the
      abstract boxed tree (keeps the logical names, e.g. for `rebox`).
    """
    abstract_boxed = jax.eval_shape(init_fn, *args)
    shardings = logical_to_shardings(abstract_boxed, mesh, rules)
    # No mesh context here: `out_shardings` alone places every shard, and flax's in-init sharding
    # constraints would be applied to the flattened kernels `nn.DenseGeneral` initialises.
    unboxed_init = lambda *a: unbox_abstract(init_fn(*a))
    values = jax.jit(unboxed_init, out_shardings=shardings)(*args)
    return values, shardings, abstract_boxed


def _dict_key_path(path: tuple[Any, ...]) -> tuple[str, ...]:
    """The dict keys of a key path (drops optax NamedTuple fields and list indices)."""
    return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def shardings_like_params(tree: Any, param_shardings: Any, params_abstract: Any, mesh: Mesh) -> Any:
    """Shardings for an optimizer-state tree: a leaf mirroring a param gets that param's sharding.

    Optax states hold copies of the param tree (Adam `mu`/`nu`) or factored statistics
    (Adafactor `v_row`/`v_col`). A leaf whose dict-key path ends with a param's path and has the
    param's shape is sharded like the param (so FSDP shards the optimizer state too); everything
    else (counts, factored vectors) is replicated.

    Args:
      tree: Abstract (or concrete) optimizer state.
      param_shardings: `NamedSharding` tree of the params.
      params_abstract: Params (or their `ShapeDtypeStruct`s), same structure.
      mesh: The mesh, for the replicated sharding.

    Returns:
      A tree of `NamedSharding` with the structure of `tree`.
    """
    by_path = {}
    flat_sh = jax.tree_util.tree_flatten_with_path(param_shardings)[0]
    flat_p = jax.tree_util.tree_flatten_with_path(params_abstract)[0]
    for (path, sh), (_, p) in zip(flat_sh, flat_p, strict=True):
        by_path[_dict_key_path(path)] = (tuple(p.shape), sh)
    repl = replicated(mesh)

    def pick(path, leaf):
        keys = _dict_key_path(path)
        for start in range(len(keys)):
            hit = by_path.get(keys[start:])
            if hit is not None and hit[0] == tuple(np.shape(leaf)):
                return hit[1]
        return repl

    return jax.tree_util.tree_map_with_path(pick, tree)


def host_local_to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of the batch into global arrays sharded over the batch axes.

    Every process passes its own `[B / process_count, ...]` rows; the result is a global
    `[B, ...]` `jax.Array` whose leading axis is split over `BATCH_MESH_AXES`.
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }
