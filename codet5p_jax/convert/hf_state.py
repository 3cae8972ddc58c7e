"""A lazy HF state dict: tensor names and shapes up front, each tensor's bytes read on access.

The 16B checkpoint is 33 GB in five `pytorch_model.bin` shards (FACTS §3.5). Holding its state
dict and the converted params at once would need two copies of the model in host memory, so a
`LazyState` reads one tensor per `state[key]` (safetensors: from the memory-mapped file;
`pytorch_model.bin`: that tensor's storage from the zip) and casts it to the requested dtype
right away. A rule table that consumes one key at a time then peaks at the converted params
plus one tensor. Every shard's header is read at construction, so a shard the index lists but
that is missing, or that disagrees with the index, is an error before anything is converted.
"""

import json
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
import safetensors

from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.convert.torch_pickle import TorchCheckpoint


class _SafetensorsFile:
    """One safetensors file, opened for tensor-by-tensor reads."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        try:
            self._file = safetensors.safe_open(str(path), framework="numpy")
            names = self._file.keys()  # noqa: SIM118 (safe_open is not iterable)
            self.shapes = {k: tuple(self._file.get_slice(k).get_shape()) for k in names}
        except (safetensors.SafetensorError, OSError, ValueError) as e:
            raise ConversionError(f"{path}: corrupt or unreadable safetensors file: {e}") from e

    def read(self, key: str) -> np.ndarray:
        try:
            return self._file.get_tensor(key)
        except (safetensors.SafetensorError, OSError, ValueError) as e:
            raise ConversionError(f"{self.path}: cannot read tensor {key!r}: {e}") from e


class _TorchFile:
    """One `pytorch_model.bin`, opened for tensor-by-tensor reads."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self._checkpoint = TorchCheckpoint(path)
        self.shapes = {k: t.shape for k, t in self._checkpoint.tensors.items()}

    def read(self, key: str) -> np.ndarray:
        return self._checkpoint.read(key)


def _open(path: pathlib.Path):
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    return _TorchFile(path) if path.suffix == ".bin" else _SafetensorsFile(path)


def _cast(x: np.ndarray, dtype) -> np.ndarray:
    """Floating tensors to `dtype` (None keeps them); integer buffers are left alone."""
    if dtype is None or not np.issubdtype(x.dtype, np.floating) and x.dtype.kind != "V":
        return x
    return x.astype(dtype, copy=False)


class LazyState(Mapping):
    """HF key -> numpy array, read from its file on each access.

    Attributes:
      files: The weight files, in index order.
    """

    def __init__(self, files: list, owner: dict[str, int], dtype=None):
        self.files, self._owner, self._dtype = files, owner, dtype

    def __getitem__(self, key: str) -> np.ndarray:
        return _cast(self.files[self._owner[key]].read(key), self._dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of `key` without reading it."""
        return self.files[self._owner[key]].shapes[key]


def open_weight_file(path, dtype=None) -> LazyState:
    """A `LazyState` over one safetensors or `pytorch_model.bin` file."""
    file = _open(pathlib.Path(path))
    return LazyState([file], dict.fromkeys(file.shapes, 0), dtype)


def open_index(index_file, dtype=None) -> LazyState:
    """A `LazyState` over the shards an index's `weight_map` lists, each checked against it.

    Raises:
      ConversionError: For an unreadable index, a listed shard that is missing or unreadable,
        or a shard whose keys differ from the index's (names the file and a key).
    """
    index_file = pathlib.Path(index_file)
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError(f"weight_map is a {type(weight_map).__name__}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConversionError(f"{index_file}: unreadable shard index: {e!r}") from e
    by_shard: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(key)
    files, owner = [], {}
    for shard, keys in by_shard.items():
        path = index_file.parent / shard
        if not path.is_file():
            raise ConversionError(
                f"{path}: no such file (listed in {index_file.name} for {keys[0]!r} and "
                f"{len(keys) - 1} more keys)"
            )
        file = _open(path)
        extra, missing = sorted(set(file.shapes) - set(keys)), sorted(set(keys) - set(file.shapes))
        if extra or missing:
            raise ConversionError(
                f"{path} does not match {index_file.name}: "
                f"keys not in the index {extra[:5]}, indexed keys missing {missing[:5]}"
            )
        owner.update(dict.fromkeys(keys, len(files)))
        files.append(file)
    return LazyState(files, owner, dtype)
