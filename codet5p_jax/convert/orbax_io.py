"""Params-only orbax checkpoint directories that carry their `T5Config`.

Layout of such a directory:

    codet5p_config.json   every T5Config field, as JSON
    params/               an orbax PyTree checkpoint of the (unboxed) param tree
    tokenizer/            tokenizer files of the source, when it had any (optional)

Params are restored as host numpy arrays in their stored dtypes; placing them on devices is
the caller's business (the façade, or the trainer with its shardings).
"""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from codet5p_jax import checkpointing
from codet5p_jax.config import T5Config
from codet5p_jax.convert import hf_t5
from codet5p_jax.convert.atomic_dir import atomic_directory
from codet5p_jax.convert.hf_io import TOKENIZER_FILES, copy_tokenizer_files
from codet5p_jax.convert.mapping import ConversionError

CONFIG_FILE = "codet5p_config.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"


def is_orbax_dir(path) -> bool:
    """Whether `path` looks like a directory written by `save_orbax`."""
    path = pathlib.Path(path)
    return (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()


def config_to_json(cfg: T5Config) -> str:
    """Every field of `cfg` as a JSON object."""
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True) + "\n"


def config_from_json(text: str, source: str = "config") -> T5Config:
    """Inverse of `config_to_json`; unknown or invalid fields raise `ConversionError`."""
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{source}: invalid JSON: {e}") from e
    known = {f.name for f in dataclasses.fields(T5Config)}
    if not isinstance(fields, dict) or set(fields) - known:
        unknown = sorted(set(fields) - known) if isinstance(fields, dict) else fields
        raise ConversionError(f"{source}: not a T5Config (unknown fields {unknown})")
    try:
        return T5Config(**fields)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{source}: {e}") from e


def save_orbax(dst, cfg: T5Config, params, tokenizer_dir=None) -> None:
    """Writes a params-only orbax checkpoint plus its config to a new directory `dst`.

    Args:
      dst: Directory to create; must not exist. Nothing is left there on failure.
      cfg: The model config; `cfg.scan_layers` must match the layout of `params`.
      params: Unboxed param tree (numpy or jax arrays).
      tokenizer_dir: Directory whose tokenizer files are stored under `tokenizer/`, or None.

    Raises:
      ConversionError: If `dst` exists or `params` does not match `cfg`.
    """
    hf_t5.check_params(params, cfg)
    params = jax.tree.map(np.asarray, params)
    with atomic_directory(dst) as tmp:
        with ocp.PyTreeCheckpointer() as checkpointer:
            checkpointer.save(tmp / PARAMS_DIR, params)
        (tmp / CONFIG_FILE).write_text(config_to_json(cfg))
        if tokenizer_dir is not None and any(
            (pathlib.Path(tokenizer_dir) / n).is_file() for n in TOKENIZER_FILES
        ):
            (tmp / TOKENIZER_DIR).mkdir()
            copy_tokenizer_files(tokenizer_dir, tmp / TOKENIZER_DIR)


def load_orbax(path) -> tuple[T5Config, dict]:
    """Loads a directory written by `save_orbax`.

    Args:
      path: The checkpoint directory.

    Returns:
      `(cfg, params)`: params as numpy arrays in their stored dtypes and layout.

    Raises:
      ConversionError: If a file is missing or unreadable, or the params do not match the
        stored config (every path and shape is checked).
    """
    path = pathlib.Path(path)
    config_file = path / CONFIG_FILE
    try:
        cfg = config_from_json(config_file.read_text(), str(config_file))
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{config_file}: unreadable: {e}") from e
    params_dir = (path / PARAMS_DIR).absolute()
    if not params_dir.is_dir():
        raise ConversionError(f"{params_dir}: no such directory (not a codet5p orbax checkpoint)")
    # A synchronous checkpointer, deliberately not closed in a `with`: closing it after a failed
    # read makes orbax's event loop print "Event loop is closed" tracebacks at exit.
    checkpointer = ocp.PyTreeCheckpointer()
    checkpointing.quiet_closed_event_loop()
    try:
        # The handler's metadata: the Checkpointer's also wants a _CHECKPOINT_METADATA file,
        # which this layout does not have, and warns about it.
        try:
            metadata = ocp.PyTreeCheckpointHandler().metadata(epath.Path(params_dir))
        except Exception as e:  # as the Checkpointer, which reported a failed read as None
            raise ConversionError(
                f"{params_dir}: no readable orbax metadata (corrupt?): "
                f"{checkpointing.error_summary(e)}"
            ) from e
        if metadata is None:
            raise ConversionError(f"{params_dir}: no readable orbax metadata (corrupt?)")
        restore_args = jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata.tree
        )
        params = checkpointer.restore(
            params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
    except ConversionError:
        raise
    except Exception as e:  # orbax/tensorstore raise many types; all mean "cannot read this"
        raise ConversionError(
            f"{params_dir}: unreadable orbax checkpoint: {checkpointing.error_summary(e)}"
        ) from e
    hf_t5.check_params(params, cfg, source=str(params_dir))
    return cfg, params


def tokenizer_dir_of(path) -> pathlib.Path | None:
    """The stored tokenizer directory of an orbax checkpoint, or None."""
    tokenizer = pathlib.Path(path) / TOKENIZER_DIR
    return tokenizer if tokenizer.is_dir() else None
