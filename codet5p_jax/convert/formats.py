"""Checkpoint formats: detect what a directory holds, load it, save it in either layout.

Formats written: "hf" (an HF model directory, see `hf_io`) and "orbax" (a params-only orbax
directory, see `orbax_io`). Also read: "run", a training MODEL_DIR (or its `checkpoints/` or a
`<step>` dir; see `checkpointing.py`), whose latest finished step is used.
`resolve_checkpoint_dir` is the single place that tells these layouts apart.
"""

import dataclasses
import pathlib

import flax.linen as nn

from codet5p_jax import checkpointing
from codet5p_jax.config import T5Config
from codet5p_jax.convert import hf_io, hf_t5, orbax_io
from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.convert.scan import scan_params, unscan_params

FORMATS = ("hf", "orbax")  # output formats; "run" directories are read only


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: config, host (numpy) params, and where its tokenizer files are.

    Attributes:
      config: The model config; `config.scan_layers` gives the layout of `params`.
      params: Nested dicts of numpy arrays, in the stored dtypes.
      tokenizer_dir: A directory with the source's tokenizer files, or None.
      format: The detected source format ("hf", "orbax" or "run").
      path: The directory the params were read from.
    """

    config: T5Config
    params: dict
    tokenizer_dir: pathlib.Path | None
    format: str
    path: pathlib.Path


def resolve_checkpoint_dir(path) -> tuple[str, pathlib.Path]:
    """Detects the format of the checkpoint at `path`.

    Args:
      path: An HF model directory, a `save_orbax` directory, or a training MODEL_DIR (also its
        `checkpoints/` or one `<step>` directory).

    Returns:
      `(format, directory)`: "hf" or "orbax" with `path`, or "run" with the latest finished
      `<step>` directory.

    Raises:
      ConversionError: If `path` does not exist or holds no recognised checkpoint.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise ConversionError(f"{path}: expected a checkpoint directory, got a file")
    if orbax_io.is_orbax_dir(path):
        return "orbax", path
    if hf_io.is_hf_dir(path):
        return "hf", path
    try:
        return "run", checkpointing.resolve_step_dir(path)
    except FileNotFoundError:
        pass
    raise ConversionError(
        f"{path}: not a checkpoint directory (no {hf_io.CONFIG_FILE} of an HF model, "
        f"no {orbax_io.CONFIG_FILE} + {orbax_io.PARAMS_DIR}/ of an orbax checkpoint, "
        f"no {checkpointing.CHECKPOINTS}/<step>/ of a training run)"
    )


def relayout(cfg: T5Config, params: dict, scan_layers: bool | None) -> tuple[T5Config, dict]:
    """Returns `(cfg, params)` in the scanned layout iff `scan_layers` (None keeps it)."""
    if scan_layers is None or scan_layers == cfg.scan_layers:
        return cfg, params
    params = scan_params(params, cfg) if scan_layers else unscan_params(params, cfg)
    return cfg.replace(scan_layers=scan_layers), params


def load_checkpoint(path, scan_layers: bool | None = None) -> Checkpoint:
    """Loads any supported checkpoint directory into host memory.

    Args:
      path: HF, orbax or training-run directory (detected by `resolve_checkpoint_dir`).
      scan_layers: Layout of the returned params; None keeps the stored layout (HF is unscanned).

    Returns:
      The `Checkpoint`.

    Raises:
      ConversionError: On any unreadable or inconsistent input (see `hf_io`, `orbax_io`).
    """
    fmt, directory = resolve_checkpoint_dir(path)
    if fmt == "hf":
        cfg, params = hf_io.read_hf_checkpoint(directory)
        tokenizer_dir = directory
    elif fmt == "orbax":
        cfg, params = orbax_io.load_orbax(directory)
        tokenizer_dir = orbax_io.tokenizer_dir_of(directory)
    else:
        cfg, params = _load_run_step(directory)
        tokenizer_dir = None
    cfg, params = relayout(cfg, params, scan_layers)
    return Checkpoint(cfg, params, tokenizer_dir, fmt, directory)


def _load_run_step(step_dir: pathlib.Path) -> tuple[T5Config, dict]:
    """Params and config of one training checkpoint step, checked against each other.

    Leaves an objective adds to the params for training only (the stage-2 learned temperature)
    are dropped: the network, and so every exported layout, has no place for them.
    """
    from codet5p_jax.objectives.bimodal import strip_objective_params  # heavy: import on use

    try:
        params, cfg, _ = checkpointing.latest_params(step_dir)
    except (checkpointing.CheckpointError, FileNotFoundError, KeyError, ValueError) as e:
        raise ConversionError(f"{step_dir}: unreadable training checkpoint: {e}") from e
    params = strip_objective_params(params)
    hf_t5.check_params(params, cfg, source=str(step_dir / "params"))
    return cfg, params


def save_checkpoint(dst, cfg: T5Config, params, fmt: str, tokenizer_dir=None) -> None:
    """Writes `params` as a new `fmt` directory `dst` (all-or-nothing).

    Args:
      dst: Directory to create; must not exist.
      cfg: The model config (its `scan_layers` describes `params`).
      params: Param tree (plain arrays, or the `nn.Partitioned` boxes `model.init` returns).
      fmt: "hf" or "orbax".
      tokenizer_dir: Directory whose tokenizer files are copied along, or None.

    Raises:
      ConversionError: If `dst` exists, `fmt` is unknown, or the params do not match `cfg`.
    """
    params = nn.unbox(params)
    if fmt == "hf":
        hf_io.write_hf_checkpoint(dst, cfg, params, tokenizer_dir)
    elif fmt == "orbax":
        orbax_io.save_orbax(dst, cfg, params, tokenizer_dir)
    else:
        raise ConversionError(f"Unknown checkpoint format {fmt!r}; expected one of {FORMATS}")
