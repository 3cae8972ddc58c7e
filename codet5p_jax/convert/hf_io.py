"""Reads and writes Hugging Face model directories with numpy + safetensors only (no torch).

Reads `config.json` plus one of `model.safetensors`, `model.safetensors.index.json`,
`pytorch_model.bin` or `pytorch_model.bin.index.json` (in that order of preference; shards are
listed by the index's `weight_map`), lazily, one tensor at a time (`hf_state.py`). Writes
`config.json` + safetensors (sharded with an index when large) in the released layout and
copies the tokenizer files a source directory had. Family-agnostic: which family
reads a `config.json`, and how its state dict maps to params, is `codet5p_jax.loading`'s
business (through the family registry).
"""

import atexit
import json
import pathlib
import shutil
import tempfile
from collections.abc import Mapping

import numpy as np
import safetensors
import safetensors.numpy
from etils import epath

from codet5p_jax import storage
from codet5p_jax.atomic_files import atomic_directory
from codet5p_jax.convert import hf_state
from codet5p_jax.convert.mapping import ConversionError

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
# HF `save_pretrained`'s default `max_shard_size` ("5GB").
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
# Preference order when a directory holds several formats.
WEIGHT_FILES = (
    SAFETENSORS_FILE,
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def is_hf_dir(path) -> bool:
    """Whether `path` is a directory with an HF `config.json`."""
    return (epath.Path(path) / CONFIG_FILE).is_file()


def read_hf_config(path) -> dict:
    """The parsed `config.json` of the HF directory `path`.

    Raises:
      ConversionError: If the file is missing or is not a JSON object.
    """
    file = epath.Path(path) / CONFIG_FILE
    try:
        hf = json.loads(file.read_text())
    except FileNotFoundError as e:
        raise ConversionError(f"{file}: no such file (not an HF model directory)") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{file}: unreadable config: {e}") from e
    if not isinstance(hf, dict):
        raise ConversionError(f"{file}: expected a JSON object")
    return hf


def read_hf_state(path, dtype=None) -> hf_state.LazyState:
    """The state dict of the HF directory `path`, read lazily (one tensor per access).

    Args:
      path: An HF model directory.
      dtype: Floating tensors are cast to it as they are read (e.g. float16 -> float32); None
        keeps the files' dtypes.

    Raises:
      ConversionError: If no weight file is present, or one is missing, corrupt or inconsistent
        with its index.
    """
    path = epath.Path(path)
    if storage.is_remote(path):
        path = _local_weights(path)  # safetensors' and the torch reader's files are local
    for name in WEIGHT_FILES:
        file = path / name
        if file.is_file():
            if name.endswith(".index.json"):
                return hf_state.open_index(file, dtype)
            return hf_state.open_weight_file(file, dtype)
    raise ConversionError(f"{path}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def _local_weights(path: epath.Path) -> epath.Path:
    """A local copy of the weight files of a remote HF directory, removed at exit (the lazy
    state reads from it after this returns)."""
    local = pathlib.Path(tempfile.mkdtemp(prefix="codet5p_hf_"))
    atexit.register(shutil.rmtree, local, True)
    for file in path.iterdir():
        if file.name.endswith((".safetensors", ".bin", ".index.json")):
            file.copy(epath.Path(local / file.name))
    return epath.Path(local)


def copy_tokenizer_files(src, dst) -> list[str]:
    """Copies the tokenizer files (`TOKENIZER_FILES`) present in `src` to `dst`; returns names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (epath.Path(src) / name).is_file():
            (epath.Path(src) / name).copy(epath.Path(dst) / name, overwrite=True)
            copied.append(name)
    return copied


def nbytes(state: Mapping[str, np.ndarray], key: str) -> int:
    """The byte size of `state[key]`, without building it when `state` is lazy."""
    return state.nbytes(key) if hasattr(state, "nbytes") else state[key].nbytes


def _shards(state: Mapping[str, np.ndarray], max_shard_bytes: int) -> list[list[str]]:
    """Keys grouped in order into shards of at most `max_shard_bytes` (a bigger tensor alone)."""
    shards, size = [[]], 0
    for key in state:
        key_bytes = nbytes(state, key)
        if shards[-1] and size + key_bytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += key_bytes
    return shards


def write_hf_dir(
    dst,
    hf_config: dict,
    state: Mapping[str, np.ndarray],
    tokenizer_dir=None,
    *,
    extra_files: dict[str, str] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> None:
    """Writes `config.json` + safetensors weights (+ tokenizer files) to a new directory.

    A state dict over `max_shard_bytes` is written as `model-0000i-of-0000n.safetensors` shards
    plus `model.safetensors.index.json` (HF's sharded layout); a smaller one as
    `model.safetensors`. Nothing is left at `dst` if anything fails (the directory is built
    beside it, then renamed).

    Args:
      dst: Directory to create; must not exist.
      hf_config: The `config.json` contents.
      state: HF key -> numpy array (a family's `params_to_hf` output, possibly lazy: each
        shard's tensors are read just before that shard is written and released after it).
      tokenizer_dir: Directory whose tokenizer files are copied along, or None.
      extra_files: File name -> text written beside the weights (e.g. a README note).
      max_shard_bytes: Largest shard written.

    Raises:
      ConversionError: If `dst` exists.
    """
    with atomic_directory(dst) as tmp:
        total = sum(nbytes(state, k) for k in state)
        if total <= max_shard_bytes:
            tensors = {k: state[k] for k in state}
            safetensors.numpy.save_file(tensors, tmp / SAFETENSORS_FILE, metadata={"format": "pt"})
            del tensors
        else:
            shards = _shards(state, max_shard_bytes)
            weight_map = {}
            for i, keys in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                tensors = {k: state[k] for k in keys}
                safetensors.numpy.save_file(tensors, tmp / name, metadata={"format": "pt"})
                del tensors  # this shard's tensors go before the next shard's are built
                weight_map.update(dict.fromkeys(keys, name))
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / SAFETENSORS_INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, tmp)
