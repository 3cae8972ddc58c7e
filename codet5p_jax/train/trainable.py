"""The trainable / frozen split of a parameter tree (compute-efficient training, paper §3.3).

CodeT5+ 2B-16B train only the shallow encoder, the cross-attention and the encoder-to-decoder
projection on top of a frozen off-the-shelf CodeGen decoder, with "FP16 frozen decoder weights
and ... other trainable weights in FP32" (paper §4; FACTS §1.3). A `Partition` makes that cheap
here, for any family:

* the frozen leaves are *stored* in `frozen_dtype` (bfloat16 by default: half the bytes);
* gradients are taken with respect to the trainable subtree only (`split` / `merge` around the
  loss), so no gradient buffer of a frozen leaf ever exists and autodiff prunes the backward
  pass of everything below the deepest trainable parameter;
* the optimizer is built over the trainable subtree only, so frozen leaves have no state.

The full tree (`TrainState.params`) keeps its layout, so checkpoints, exports and decoding see one
parameter tree whatever is frozen.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import traverse_util


def _flat(tree) -> dict[tuple, object]:
    return traverse_util.flatten_dict(tree) if tree else {}


def path_str(key: tuple) -> str:
    """`("encoder", "layers_0", "mlp")` -> `"encoder/layers_0/mlp"`."""
    return "/".join(str(k) for k in key)


@dataclasses.dataclass(frozen=True)
class Partition:
    """Which leaves of a nested-dict param tree train.

    Attributes:
      trainable: Flattened dict-key paths of the trainable leaves.
      frozen: Flattened dict-key paths of the frozen leaves.
      frozen_dtype: Storage dtype of frozen leaves (None: keep their dtype).
    """

    trainable: frozenset
    frozen: frozenset
    frozen_dtype: str | None = "bfloat16"

    @property
    def freezes_anything(self) -> bool:
        return bool(self.frozen)

    def split(self, params) -> tuple[dict, dict]:
        """`params` -> `(trainable subtree, frozen subtree)`, both nested dicts."""
        flat = _flat(params)
        unknown = set(flat) - self.trainable - self.frozen
        if unknown:
            names = sorted(map(path_str, unknown))[:5]
            raise ValueError(f"params not covered by the trainable/frozen partition: {names}")
        train = {k: v for k, v in flat.items() if k in self.trainable}
        frozen = {k: v for k, v in flat.items() if k in self.frozen}
        return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)

    def merge(self, trainable, frozen) -> dict:
        """Inverse of `split`."""
        return traverse_util.unflatten_dict({**_flat(trainable), **_flat(frozen)})

    def cast_frozen(self, tree, is_leaf=None):
        """`tree` (params, shape structs or boxed params) with frozen leaves in `frozen_dtype`."""
        if self.frozen_dtype is None or not self.frozen:
            return tree
        dtype = jnp.dtype(self.frozen_dtype)

        def cast(path, leaf):
            key = tuple(getattr(k, "key", getattr(k, "name", k)) for k in path)
            if key not in self.frozen:
                return leaf
            if hasattr(leaf, "replace_boxed"):  # a flax logical-partitioning box
                return leaf.replace_boxed(_cast_leaf(leaf.unbox(), dtype))
            return _cast_leaf(leaf, dtype)

        return jax.tree_util.tree_map_with_path(cast, tree, is_leaf=is_leaf)


def _cast_leaf(x, dtype):
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape, dtype, sharding=getattr(x, "sharding", None))
    return x.astype(dtype)


def make_partition(mask, frozen_dtype: str | None = "bfloat16") -> Partition:
    """The `Partition` of a boolean tree (True = trainable), e.g. `optimizers.trainable_mask`."""
    flat = _flat(mask)
    return Partition(
        trainable=frozenset(k for k, m in flat.items() if m),
        frozen=frozenset(k for k, m in flat.items() if not m),
        frozen_dtype=frozen_dtype,
    )
