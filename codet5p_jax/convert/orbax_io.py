"""Params-only orbax checkpoint directories that carry their model config.

Layout of such a directory:

    codet5p_config.json   the config's fields and its `family` tag, as JSON
    params/               an orbax PyTree checkpoint of the (unboxed) param tree
    tokenizer/            tokenizer files of the source, when it had any (optional)

Params are restored as host numpy arrays in their stored dtypes; placing them on devices is
the caller's business (the façade, or the trainer with its shardings).
"""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from codet5p_jax import storage
from codet5p_jax.atomic_files import atomic_directory
from codet5p_jax.convert.hf_io import TOKENIZER_FILES, copy_tokenizer_files
from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.convert.orbax_errors import error_summary, quiet_closed_event_loop

CONFIG_FILE = "codet5p_config.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"


def is_orbax_dir(path) -> bool:
    """Whether `path` looks like a directory written by `write_orbax_dir`."""
    path = epath.Path(path)
    return (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()


def read_config(path) -> dict:
    """The saved config dict of an orbax directory (parsed by `families.config_from_dict`).

    Raises:
      ConversionError: If the file is missing, unreadable or not a JSON object.
    """
    config_file = epath.Path(path) / CONFIG_FILE
    try:
        fields = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{config_file}: unreadable: {e}") from e
    except json.JSONDecodeError as e:
        raise ConversionError(f"{config_file}: invalid JSON: {e}") from e
    if not isinstance(fields, dict):
        raise ConversionError(f"{config_file}: expected a JSON object")
    return fields


def _save_handler() -> ocp.PyTreeCheckpointHandler:
    """A PyTree handler that writes host numpy arrays without copying them first.

    Orbax's default numpy handler deep-copies every array before writing (a guard against the
    caller mutating it during an asynchronous save): a second copy of the whole model in host
    memory. This save is synchronous and the arrays are not touched meanwhile, so the copy only
    costs memory.
    """
    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
        # Unused (leaves are numpy), but without it orbax warns that array metadata is off.
        (jax.Array, ocp.type_handlers.get_type_handler(jax.Array)),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def write_orbax_dir(dst, config: dict, params, tokenizer_dir=None) -> None:
    """Writes a params-only orbax checkpoint plus its config dict to a new directory `dst`.

    Args:
      dst: Directory to create; must not exist. Nothing is left there on failure.
      config: The JSON-able config (`families.config_to_dict`).
      params: Unboxed param tree of numpy arrays (checked against the config by the caller).
      tokenizer_dir: Directory whose tokenizer files are stored under `tokenizer/`, or None.

    Raises:
      ConversionError: If `dst` exists.
    """
    with atomic_directory(dst) as tmp:
        with ocp.Checkpointer(_save_handler()) as checkpointer:
            checkpointer.save(tmp / PARAMS_DIR, args=ocp.args.PyTreeSave(params))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if tokenizer_dir is not None and any(
            (epath.Path(tokenizer_dir) / n).is_file() for n in TOKENIZER_FILES
        ):
            (tmp / TOKENIZER_DIR).mkdir()
            copy_tokenizer_files(tokenizer_dir, tmp / TOKENIZER_DIR)


def read_params(path) -> dict:
    """The params of an orbax directory as numpy arrays, in their stored dtypes and layout.

    Raises:
      ConversionError: If `params/` is missing or unreadable.
    """
    params_dir = epath.Path(path) / PARAMS_DIR
    if not storage.is_remote(params_dir):
        params_dir = params_dir.absolute()
    if not params_dir.is_dir():
        raise ConversionError(f"{params_dir}: no such directory (not a codet5p orbax checkpoint)")
    # A synchronous checkpointer, deliberately not closed in a `with`: closing it after a failed
    # read makes orbax's event loop print "Event loop is closed" tracebacks at exit.
    checkpointer = ocp.PyTreeCheckpointer()
    quiet_closed_event_loop()
    try:
        # The handler's metadata: the Checkpointer's also wants a _CHECKPOINT_METADATA file,
        # which this layout does not have, and warns about it.
        try:
            metadata = ocp.PyTreeCheckpointHandler().metadata(epath.Path(params_dir))
        except Exception as e:  # as the Checkpointer, which reported a failed read as None
            raise ConversionError(
                f"{params_dir}: no readable orbax metadata (corrupt?): {error_summary(e)}"
            ) from e
        if metadata is None:
            raise ConversionError(f"{params_dir}: no readable orbax metadata (corrupt?)")
        restore_args = jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata.tree
        )
        return checkpointer.restore(
            params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
    except ConversionError:
        raise
    except Exception as e:  # orbax/tensorstore raise many types; all mean "cannot read this"
        raise ConversionError(
            f"{params_dir}: unreadable orbax checkpoint: {error_summary(e)}"
        ) from e


def tokenizer_dir_of(path) -> epath.Path | None:
    """The stored tokenizer directory of an orbax checkpoint, or None."""
    tokenizer = epath.Path(path) / TOKENIZER_DIR
    return tokenizer if tokenizer.is_dir() else None
