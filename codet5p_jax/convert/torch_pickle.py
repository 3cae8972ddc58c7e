"""Reads a `torch.save` state dict (`pytorch_model.bin`) into numpy, without torch.

Since torch 1.6 `torch.save` writes a zip: `<prefix>/data.pkl` (the pickled dict, whose tensors
reference storages through `persistent_load` ids `("storage", <torch.XStorage>, key, location,
numel)`), one raw little-endian file `<prefix>/data/<key>` per storage, and `<prefix>/byteorder`.
Tensors are rebuilt by `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
The unpickler below only resolves those few globals, so a malicious pickle cannot run code.
"""

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

from codet5p_jax.convert.mapping import ConversionError

# torch storage class name -> numpy dtype (torch/storage.py `_LegacyStorage` subclasses).
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for `torch.XStorage` in the pickle: only its dtype matters."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class LazyTensor:
    """A tensor of the pickle, not read yet: its storage reference and layout.

    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` returns one of these,
    so opening a checkpoint reads only the small pickle; each tensor's bytes are read from the
    zip when `TorchCheckpoint.read` asks for it (a 33 GB model never sits in memory twice).
    """

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.shape, self.stride = tuple(size), tuple(stride)
        if len(self.shape) != len(self.stride) or min(self.stride, default=0) < 0 or offset < 0:
            raise pickle.UnpicklingError(f"bad tensor layout size={size} stride={stride}")
        last = offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if 0 not in self.shape and last >= storage.numel:
            # as_strided does not bounds-check: a corrupt pickle must not read past the storage.
            raise pickle.UnpicklingError(f"tensor of size {self.shape} overruns its storage")

    @property
    def dtype(self) -> np.dtype:
        return self.storage.dtype

    def materialize(self, storage: np.ndarray) -> np.ndarray:
        """A contiguous copy of this tensor out of its storage's array (strides in elements)."""
        item = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[self.offset :], shape=self.shape, strides=tuple(s * item for s in self.stride)
        )
        return np.array(view, order="C")


class _StorageRef:
    """A storage of the zip (`<prefix>/data/<key>`), read on demand."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    """Lazy version of `torch._utils._rebuild_tensor_v2`."""
    del requires_grad, hooks, meta  # autograd metadata: irrelevant to weights
    return LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    """`torch._utils._rebuild_parameter(_with_state)`: an `nn.Parameter` is just its data here."""
    del requires_grad, hooks, state
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding globals; storages are read lazily from the zip."""

    def __init__(self, file):
        super().__init__(file)

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


class TorchCheckpoint:
    """An open `pytorch_model.bin`: tensor names and shapes now, tensor bytes on `read`.

    Attributes:
      path: The file.
      tensors: Key -> `LazyTensor` (shape and dtype known without reading data).
    """

    def __init__(self, path):
        self.path = path
        try:
            self._archive = zipfile.ZipFile(path)
            pickles = [n for n in self._archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ConversionError(f"{path}: not a torch.save zip (no single */data.pkl)")
            self._prefix = pickles[0][: -len("/data.pkl")]
            names = set(self._archive.namelist())
            self._byteorder = "little"
            if f"{self._prefix}/byteorder" in names:
                self._byteorder = self._archive.read(f"{self._prefix}/byteorder").decode().strip()
            with self._archive.open(pickles[0]) as f:
                state = _RestrictedUnpickler(f).load()
        except ConversionError:
            raise
        except zipfile.BadZipFile as e:
            raise ConversionError(
                f"{path}: corrupt, or not a zip-format torch checkpoint ({e}); legacy (pre-1.6) "
                "torch.save files are not supported, re-save them or use safetensors"
            ) from e
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError, OSError) as e:
            raise ConversionError(f"{path}: corrupt or unsupported torch checkpoint: {e}") from e
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, LazyTensor) for k, v in state.items()
        ):
            raise ConversionError(f"{path}: expected a dict of tensors (a state dict)")
        self.tensors: dict[str, LazyTensor] = dict(state)

    def read(self, key: str) -> np.ndarray:
        """The tensor `key` as a contiguous numpy array in its stored dtype.

        Raises:
          ConversionError: If its storage is missing or truncated (names the file and key).
        """
        tensor = self.tensors[key]
        ref = tensor.storage
        try:
            raw = self._archive.read(f"{self._prefix}/data/{ref.key}")
            order = "<" if self._byteorder == "little" else ">"
            storage = np.frombuffer(raw, dtype=ref.dtype.newbyteorder(order), count=ref.numel)
            return tensor.materialize(storage.astype(ref.dtype, copy=False))
        except (KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
            raise ConversionError(
                f"{self.path}: corrupt or unsupported torch checkpoint: tensor {key!r}: {e}"
            ) from e


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Loads a whole `torch.save`d state dict as numpy arrays (bfloat16 via `ml_dtypes`).

    Args:
      path: A zip-format `pytorch_model.bin` (torch >= 1.6).

    Returns:
      Key -> contiguous numpy array, in the file's dtypes.

    Raises:
      ConversionError: If the file is not a zip-format torch checkpoint, is corrupt, or holds
        anything but tensors (the message names the file).
    """
    checkpoint = TorchCheckpoint(path)
    return {key: checkpoint.read(key) for key in checkpoint.tensors}
