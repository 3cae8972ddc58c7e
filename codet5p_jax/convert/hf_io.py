"""Reads and writes Hugging Face model directories with numpy + safetensors only (no torch).

Reads `config.json` plus one of `model.safetensors`, `model.safetensors.index.json`,
`pytorch_model.bin` or `pytorch_model.bin.index.json` (in that order of preference; shards are
listed by the index's `weight_map`). Writes `config.json` + `model.safetensors` in the released
layout and copies the tokenizer files a source directory had. Family-agnostic: which family
reads a `config.json`, and how its state dict maps to params, is `codet5p_jax.loading`'s
business (through the family registry).
"""

import json

import numpy as np
import safetensors
import safetensors.numpy
from etils import epath

from codet5p_jax import storage
from codet5p_jax.atomic_files import atomic_directory
from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.convert.torch_pickle import load_torch_state_dict

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
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


def _read_weight_file(file: epath.Path) -> dict[str, np.ndarray]:
    if not file.is_file():
        raise ConversionError(f"{file}: no such file")
    if file.suffix == ".bin":
        with storage.local_copy(file) as local:  # a zip archive: read from a local copy
            return load_torch_state_dict(local)
    try:
        if storage.is_remote(file):
            return safetensors.numpy.load(file.read_bytes())
        return safetensors.numpy.load_file(file)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise ConversionError(f"{file}: corrupt or unreadable safetensors file: {e}") from e


def _read_sharded(index_file: epath.Path) -> dict[str, np.ndarray]:
    """Reads every shard an index names and checks each holds exactly its listed keys."""
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConversionError(f"{index_file}: unreadable shard index: {e!r}") from e
    by_shard: dict[str, set[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, set()).add(key)
    state = {}
    for shard, keys in sorted(by_shard.items()):
        tensors = _read_weight_file(index_file.parent / shard)
        if set(tensors) != keys:
            extra, missing = sorted(set(tensors) - keys), sorted(keys - set(tensors))
            raise ConversionError(
                f"{index_file.parent / shard} does not match {index_file.name}: "
                f"keys not in the index {extra[:5]}, indexed keys missing {missing[:5]}"
            )
        state.update(tensors)
    return state


def read_hf_state(path) -> dict[str, np.ndarray]:
    """The state dict of the HF directory `path` as numpy arrays, in the files' dtypes.

    Raises:
      ConversionError: If no weight file is present, or one is corrupt or inconsistent.
    """
    path = epath.Path(path)
    for name in WEIGHT_FILES:
        file = path / name
        if file.is_file():
            return _read_sharded(file) if name.endswith(".index.json") else _read_weight_file(file)
    raise ConversionError(f"{path}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def copy_tokenizer_files(src, dst) -> list[str]:
    """Copies the tokenizer files (`TOKENIZER_FILES`) present in `src` to `dst`; returns names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (epath.Path(src) / name).is_file():
            (epath.Path(src) / name).copy(epath.Path(dst) / name, overwrite=True)
            copied.append(name)
    return copied


def write_hf_dir(dst, hf_config: dict, state: dict[str, np.ndarray], tokenizer_dir=None) -> None:
    """Writes `config.json` + `model.safetensors` (+ tokenizer files) to a new directory.

    Nothing is left at `dst` if anything fails (the directory is built beside it, then renamed).

    Args:
      dst: Directory to create; must not exist.
      hf_config: The `config.json` contents.
      state: HF key -> numpy array (a family's `params_to_hf` output).
      tokenizer_dir: Directory whose tokenizer files are copied along, or None.

    Raises:
      ConversionError: If `dst` exists.
    """
    with atomic_directory(dst) as tmp:
        safetensors.numpy.save_file(state, tmp / SAFETENSORS_FILE, metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, tmp)
