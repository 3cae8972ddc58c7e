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


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    """numpy version of `torch._utils._rebuild_tensor_v2` (strides are in elements)."""
    del requires_grad, hooks, meta  # autograd metadata: irrelevant to weights
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or min(stride, default=0) < 0 or offset < 0:
        raise pickle.UnpicklingError(f"bad tensor layout size={size} stride={stride}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if 0 not in size and last >= storage.size:
        # as_strided does not bounds-check: a corrupt pickle must not read past the storage.
        raise pickle.UnpicklingError(f"tensor of size {size} overruns its storage")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride)
    )
    return np.array(view, order="C")  # a contiguous copy, independent of the shared storage


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

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
        self._storages: dict[str, np.ndarray] = {}

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
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
            array = np.frombuffer(raw, dtype=dtype, count=numel)
            self._storages[key] = array.astype(storage_type.dtype, copy=False)
        return self._storages[key]


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Loads a `torch.save`d state dict as numpy arrays (bfloat16 via `ml_dtypes`).

    Args:
      path: A zip-format `pytorch_model.bin` (torch >= 1.6).

    Returns:
      Key -> contiguous numpy array, in the file's dtypes.

    Raises:
      ConversionError: If the file is not a zip-format torch checkpoint, is corrupt, or holds
        anything but tensors (the message names the file).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ConversionError(f"{path}: not a torch.save zip (no single */data.pkl)")
            prefix = pickles[0][: -len("/data.pkl")]
            names = set(archive.namelist())
            byteorder = "little"
            if f"{prefix}/byteorder" in names:
                byteorder = archive.read(f"{prefix}/byteorder").decode().strip()
            with archive.open(pickles[0]) as f:
                state = _RestrictedUnpickler(f, archive, prefix, byteorder).load()
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
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()
    ):
        raise ConversionError(f"{path}: expected a dict of tensors (a state dict)")
    return dict(state)
