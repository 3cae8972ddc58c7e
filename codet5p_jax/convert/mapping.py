"""Generic HF <-> JAX parameter mapping: rules as data, applied with strict accounting.

A family table (e.g. `hf_t5.py`) lists one `Rule` per tensor: the HF state-dict key, the flat
JAX param path (`/`-joined), both shapes, and the `Transform` between the two layouts. Both
directions come from the same rules (like maxtext hooks). `apply_hf_to_jax` and
`apply_jax_to_hf` then enforce nanoGPT-style accounting: every source key is consumed exactly
once, every target key is produced exactly once, shapes are asserted, and the only keys that may
be dropped are the explicitly listed tied copies and ignorable keys.
"""

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import numpy as np


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file, key or shape."""


@dataclasses.dataclass(frozen=True)
class Transform:
    """A pair of inverse array maps between the HF and the JAX layout of one tensor.

    Both return views where numpy can (transposes, axis splits), so converting a checkpoint
    copies each tensor once, when it is written; the writers make arrays contiguous.
    """

    name: str
    to_jax: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


IDENTITY = Transform("identity", lambda x: x, lambda x: x)
# torch `nn.Linear.weight` is [out, in]; flax kernels are [in, out]. Also the T5 relative bias
# table, stored by HF as an `nn.Embedding(R, N)` and by us as [N, R].
TRANSPOSE = Transform("transpose", lambda x: x.T, lambda x: x.T)


def split_heads_in(num_heads: int, head_dim: int) -> Transform:
    """HF q/k/v `[N*H, D]` (head-major rows) <-> our `[D, N, H]` kernels."""
    return Transform(
        "split_heads_in",
        lambda x: x.T.reshape(x.shape[1], num_heads, head_dim),
        lambda x: x.reshape(x.shape[0], num_heads * head_dim).T,
    )


def split_heads_out(num_heads: int, head_dim: int) -> Transform:
    """HF o `[D, N*H]` <-> our `[N, H, D]` output kernel."""
    return Transform(
        "split_heads_out",
        lambda x: x.T.reshape(num_heads, head_dim, x.shape[0]),
        lambda x: x.reshape(num_heads * head_dim, x.shape[-1]).T,
    )


@dataclasses.dataclass(frozen=True)
class Rule:
    """One HF tensor <-> one JAX param.

    Attributes:
      hf: HF state-dict key.
      jax: Flat JAX param path, `/`-joined (unscanned layout).
      hf_shape: Shape of the HF tensor.
      jax_shape: Shape of the JAX param.
      transform: Maps the HF array to the JAX array and back.
    """

    hf: str
    jax: str
    hf_shape: tuple[int, ...]
    jax_shape: tuple[int, ...]
    transform: Transform = IDENTITY


@dataclasses.dataclass(frozen=True)
class RuleTable:
    """All rules of one model, plus the HF keys that may appear without a JAX counterpart.

    Attributes:
      rules: One per parameter.
      tied: HF key -> the HF key it is a tied copy of. Optional in a source; when present it
        must equal its original exactly (else the weights are untied and cannot be represented).
        Never written.
      ignorable: HF key -> why it can be dropped. Optional in a source; never written.
    """

    rules: tuple[Rule, ...]
    tied: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ignorable: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for attr in ("hf", "jax"):
            seen = set()
            for rule in self.rules:
                key = getattr(rule, attr)
                if key in seen:  # a table bug, not bad input
                    raise AssertionError(f"Duplicate {attr} key {key!r} in the rule table")
                seen.add(key)

    def jax_shapes(self) -> dict[str, tuple[int, ...]]:
        """Flat JAX path -> expected shape (unscanned layout)."""
        return {rule.jax: rule.jax_shape for rule in self.rules}


class LazyArrays(Mapping):
    """Key -> array, each made only when accessed; shapes and dtypes known up front.

    An export's state dict: a writer that takes one shard's keys at a time holds that shard's
    tensors and no more, instead of a whole second copy of the model beside the params.
    """

    def __init__(self):
        self._entries: dict[str, tuple[tuple[int, ...], np.dtype, Callable[[], np.ndarray]]] = {}

    def add(self, key: str, shape, dtype, make: Callable[[], np.ndarray]) -> None:
        """Registers `key`, whose array (of `shape` and `dtype`) `make()` builds."""
        self._entries[key] = (tuple(shape), np.dtype(dtype), make)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._entries[key][2]()

    def __contains__(self, key) -> bool:  # Mapping's default would build the array
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of `key` without building it."""
        return self._entries[key][0]

    def dtype(self, key: str) -> np.dtype:
        """The dtype of `key` without building it."""
        return self._entries[key][1]

    def nbytes(self, key: str) -> int:
        """The byte size of `key` without building it."""
        shape, dtype, _ = self._entries[key]
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def raise_problems(problems: list[str], what: str) -> None:
    """Raises one `ConversionError` listing `problems` (the first 20) under the heading `what`."""
    if not problems:
        return
    shown = problems[:20]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise ConversionError(f"{what}: {len(problems)} problem(s)\n  " + "\n  ".join(shown) + more)


def apply_hf_to_jax(
    state: Mapping[str, np.ndarray], table: RuleTable, source: str = "HF state dict"
) -> dict[str, np.ndarray]:
    """Maps an HF state dict to flat JAX params, consuming every key exactly once.

    Args:
      state: HF key -> array.
      table: The model's rules.
      source: Names the input (a file or directory) in error messages.

    Returns:
      Flat `/`-joined JAX path -> array (unscanned layout, source dtype kept).

    Raises:
      ConversionError: Listing every missing key, leftover key, shape mismatch and tied copy that
        differs from its original.
    """
    problems, flat, consumed = [], {}, set()
    for rule in table.rules:
        if rule.hf not in state:
            problems.append(f"missing key {rule.hf!r} (shape {rule.hf_shape})")
            continue
        value = np.asarray(state[rule.hf])
        consumed.add(rule.hf)
        if tuple(value.shape) != rule.hf_shape:
            problems.append(
                f"shape mismatch for {rule.hf!r}: expected {rule.hf_shape}, got {value.shape}"
            )
            continue
        flat[rule.jax] = rule.transform.to_jax(value)
    for key, original in table.tied.items():
        if key not in state:
            continue
        consumed.add(key)
        if original in state and not np.array_equal(np.asarray(state[key]), state[original]):
            problems.append(
                f"{key!r} should be a tied copy of {original!r} but differs "
                "(untied embeddings are not a CodeT5+ layout)"
            )
    consumed.update(key for key in table.ignorable if key in state)
    leftover = sorted(set(state) - consumed)
    problems += [f"unexpected key {k!r} (shape {tuple(np.shape(state[k]))})" for k in leftover]
    raise_problems(problems, f"Cannot convert {source}")
    return flat


def apply_jax_to_hf(
    flat: Mapping[str, np.ndarray], table: RuleTable, source: str = "params"
) -> LazyArrays:
    """Maps flat JAX params to an HF state dict, producing every HF key exactly once.

    Every param is checked here; the HF arrays are built only when read (see `LazyArrays`).

    Args:
      flat: `/`-joined JAX path -> array (unscanned layout).
      table: The model's rules.
      source: Names the input in error messages.

    Returns:
      HF key -> contiguous array on access (tied copies and ignorable keys are not written).

    Raises:
      ConversionError: Listing every missing or leftover param and shape mismatch.
    """
    problems, state = [], LazyArrays()
    for rule in table.rules:
        if rule.jax not in flat:
            problems.append(f"missing param {rule.jax!r} (shape {rule.jax_shape})")
            continue
        value = flat[rule.jax]
        if tuple(np.shape(value)) != rule.jax_shape:
            problems.append(
                f"shape mismatch for {rule.jax!r}: expected {rule.jax_shape}, got {np.shape(value)}"
            )
            continue
        state.add(
            rule.hf,
            rule.hf_shape,
            value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype,
            lambda value=value, rule=rule: np.ascontiguousarray(
                rule.transform.to_hf(np.asarray(value))
            ),
        )
    known = {rule.jax for rule in table.rules}
    problems += [
        f"unexpected param {k!r} (shape {tuple(np.shape(flat[k]))})"
        for k in sorted(set(flat) - known)
    ]
    raise_problems(problems, f"Cannot convert {source}")
    return state
