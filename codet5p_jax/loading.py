"""The one checkpoint loader: any checkpoint path -> config, host params, tokenizer files.

Layouts, told apart here and nowhere else (`resolve`):

* "hf": an HF model directory (`config.json` + safetensors / `pytorch_model.bin`, sharded or
  not); the family is found from `architectures` (`families.family_for_hf`);
* "orbax": a params-only directory written by `save(..., "orbax")` / `codet5p convert --to
  orbax` (`codet5p_config.json` with a `family` tag, `params/`, optional `tokenizer/`);
* "run": a training `MODEL_DIR`, its `checkpoints/`, or one `<step>` directory; the newest
  finished step is read, without the training-only leaves an objective adds (the stage-2
  temperature), which no network or export has a place for.

`save` writes "hf" or "orbax" all-or-nothing; `convert` is load + save. The façade, eval,
infer, retrieval, embedding export, initial checkpoints and the stage-2 report all load here.
"""

import collections
import dataclasses

import flax.linen as nn
import jax
import numpy as np
from etils import epath

from codet5p_jax import atomic_files, checkpointing, families
from codet5p_jax.convert import hf_io, orbax_io
from codet5p_jax.convert.mapping import ConversionError

FORMATS = ("hf", "orbax")  # output formats; "run" directories are read only


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
      config: The model config (a registered family's); its scan layout is that of `params`.
      params: Nested dicts of numpy arrays, in the stored dtypes.
      tokenizer_dir: A directory holding the checkpoint's tokenizer files, or None.
      format: The detected source layout: "hf", "orbax" or "run".
      path: The directory the params were read from (for "run", the `<step>` directory).
      step: The training step of a "run" checkpoint; None for the other layouts.
    """

    config: object
    params: dict
    tokenizer_dir: epath.Path | None
    format: str
    path: epath.Path
    step: int | None = None

    @property
    def family(self) -> families.Family:
        """The registered family of `config`."""
        return families.family_of(self.config)

    def describe(self) -> str:
        """`"/runs/x/checkpoints/60 (step 60)"` or `"/ckpt (orbax)"`, for log lines."""
        if self.step is not None:
            return f"{self.path} (step {self.step})"
        return f"{self.path} ({self.format})"


def resolve(path) -> tuple[str, epath.Path]:
    """Detects the layout of the checkpoint at `path`.

    Returns:
      `(format, directory)`: "hf" or "orbax" with `path`, or "run" with the newest finished
      `<step>` directory.

    Raises:
      ConversionError: If `path` does not exist, is a file, or holds no checkpoint.
    """
    path = epath.Path(path)  # keeps gs:// (pathlib would fold it into gs:/)
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


def _config_error(source, e: Exception) -> ConversionError:
    return ConversionError(str(e) if str(e).startswith(str(source)) else f"{source}: {e}")


def read_hf(directory: epath.Path, dtype=None):
    """`(config, unscanned params)` of an HF directory, through its family's rule table.

    Tensors are read (and cast to `dtype`, when given) one at a time as the rule table consumes
    them, so a sharded checkpoint never sits in host memory beside its converted params.
    """
    hf = hf_io.read_hf_config(directory)
    source = directory / hf_io.CONFIG_FILE
    try:
        family = families.family_for_hf(hf, str(source))
        config = family.hf.config_from_hf(hf, directory.name)
    except KeyError as e:
        raise ConversionError(f"{source}: missing field {e}") from e
    except (ValueError, TypeError) as e:
        raise _config_error(source, e) from e
    state = hf_io.read_hf_state(directory, dtype)
    return config, family.hf.hf_to_params(state, config, str(directory))


def read_orbax(directory: epath.Path):
    """`(config, params)` of a params-only orbax directory, checked against each other."""
    source = directory / orbax_io.CONFIG_FILE
    try:
        config = families.config_from_dict(orbax_io.read_config(directory), str(source))
    except families.FamilyError as e:
        raise ConversionError(str(e)) from e
    params = orbax_io.read_params(directory)
    families.family_of(config).check_params(params, config, str(directory / orbax_io.PARAMS_DIR))
    return config, params


def read_run_step(step_dir: epath.Path):
    """`(config, params, step)` of one training checkpoint step, objective leaves dropped."""
    from codet5p_jax.objectives.bimodal import strip_objective_params  # heavy: import on use

    try:
        params, config, step = checkpointing.latest_params(step_dir)
    except (checkpointing.CheckpointError, FileNotFoundError, KeyError, ValueError) as e:
        raise ConversionError(f"{step_dir}: unreadable training checkpoint: {e}") from e
    params = strip_objective_params(params)
    families.family_of(config).check_params(params, config, str(step_dir / "params"))
    return config, params, step


def _cast_floating(params, dtype):
    """Floating leaves of `params` as `dtype` (integer leaves untouched)."""
    dtype = np.dtype(dtype)

    def cast(x):
        x = np.asarray(x)
        floating = np.issubdtype(x.dtype, np.floating) or x.dtype.kind == "V"  # V: bfloat16
        return x.astype(dtype, copy=False) if floating else x

    return jax.tree.map(cast, params)


def load(path, *, scan_layers: bool | None = None, dtype=None) -> Checkpoint:
    """Loads any supported checkpoint into host memory.

    Args:
      path: An HF, orbax or training-run directory (see the module docstring).
      scan_layers: Layout of the returned params; None keeps the stored one (HF is unscanned).
      dtype: Floating params are returned in this dtype (e.g. the released float16 weights as
        float32); None keeps the stored dtypes. HF tensors are cast one at a time as read.

    Returns:
      The `Checkpoint`.

    Raises:
      ConversionError: On anything missing, unreadable or inconsistent; the message names the
        file, key or field.
    """
    fmt, directory = resolve(path)
    step = None
    if fmt == "hf":
        config, params = read_hf(directory, dtype)
        tokenizer_dir = directory
    elif fmt == "orbax":
        config, params = read_orbax(directory)
        tokenizer_dir = orbax_io.tokenizer_dir_of(directory)
    else:
        config, params, step = read_run_step(directory)
        tokenizer_dir = None
    if dtype is not None and fmt != "hf":
        params = _cast_floating(params, dtype)
    if scan_layers is not None:
        config, params = families.family_of(config).relayout(params, config, scan_layers)
    return Checkpoint(config, params, tokenizer_dir, fmt, directory, step)


def _dominant_dtype(state) -> str:
    """The dtype most parameters are stored in (HF `torch_dtype` for `dtype="auto"` loaders).

    Read from a lazy state's shapes and dtypes when it has them (nothing is built).
    """
    sizes = collections.Counter()
    for key in state:
        if hasattr(state, "dtype"):
            sizes[str(state.dtype(key))] += int(np.prod(state.shape(key)))
        else:
            x = state[key]
            sizes[str(x.dtype)] += x.size
    return sizes.most_common(1)[0][0]


def save(
    dst,
    config,
    params,
    fmt: str,
    tokenizer_dir=None,
    *,
    max_shard_bytes: int = hf_io.DEFAULT_MAX_SHARD_BYTES,
) -> None:
    """Writes `params` as a new `fmt` directory `dst`, all-or-nothing.

    Args:
      dst: Directory to create; must not exist.
      config: The model config (its scan layout describes `params`).
      params: Param tree (plain arrays, or the `nn.Partitioned` boxes `model.init` returns).
      fmt: "hf" or "orbax".
      tokenizer_dir: Directory whose tokenizer files are copied along, or None.
      max_shard_bytes: HF output: weights over this size are written as sharded safetensors
        with an index.

    Raises:
      ConversionError: If `dst` exists, `fmt` is unknown, the family has no HF layout, or the
        params do not match `config`.
    """
    params = nn.unbox(params)
    family = families.family_of(config)
    try:
        _save(dst, config, params, fmt, tokenizer_dir, family, max_shard_bytes)
    except atomic_files.DestinationError as e:
        raise ConversionError(str(e)) from None


def _save(dst, config, params, fmt, tokenizer_dir, family, max_shard_bytes) -> None:
    if fmt == "hf":
        if family.hf is None:
            raise ConversionError(f"model family {family.name!r} has no HF layout to export to")
        state = family.hf.params_to_hf(params, config, "params")
        hf = family.hf.config_to_hf(config)
        # Record the dtype actually written, so `dtype="auto"` loaders keep it.
        hf["torch_dtype"] = _dominant_dtype(state)
        extra = {} if family.hf.readme is None else {"README.md": family.hf.readme(config)}
        hf_io.write_hf_dir(
            dst, hf, state, tokenizer_dir, extra_files=extra, max_shard_bytes=max_shard_bytes
        )
    elif fmt == "orbax":
        family.check_params(params, config, "params")
        params = jax.tree.map(np.asarray, params)
        orbax_io.write_orbax_dir(dst, families.config_to_dict(config), params, tokenizer_dir)
    else:
        raise ConversionError(f"Unknown checkpoint format {fmt!r}; expected one of {FORMATS}")


def _make_contiguous(params: dict) -> None:
    """Replaces every non-contiguous leaf of `params` by a contiguous copy, one at a time.

    HF sources give transposed views of the tensors as read. Orbax (tensorstore) writes all
    leaves at once and copies each view into a contiguous buffer first, so every such copy would
    sit beside the params; copying here, leaf by leaf, frees each viewed tensor right away.
    """
    if not isinstance(params, dict):  # e.g. a FrozenDict: leave it as it is
        return
    for key, value in params.items():
        if isinstance(value, dict):
            _make_contiguous(value)
        elif isinstance(value, np.ndarray) and not value.flags.c_contiguous:
            params[key] = np.ascontiguousarray(value)


def convert(
    src,
    dst,
    to: str,
    scan: bool | None = None,
    tokenizer_dir=None,
    *,
    dtype=None,
    max_shard_bytes: int = hf_io.DEFAULT_MAX_SHARD_BYTES,
) -> Checkpoint:
    """Converts the checkpoint at `src` into a new `to`-format directory `dst`.

    Args:
      src: Source checkpoint directory (layout detected).
      dst: Directory to create.
      to: "hf" or "orbax".
      scan: Layout of orbax output (None keeps the source's); HF output is always unscanned.
      tokenizer_dir: Tokenizer files to write instead of the source's own (None: the source's).
      dtype: Floating params written in this dtype; None keeps the source's.
      max_shard_bytes: HF output: larger weights are written as sharded safetensors.

    Returns:
      The loaded source checkpoint, in the layout that was written.

    Raises:
      ConversionError: On any bad input; nothing is written at `dst` then.
    """
    if to == "hf" and scan:
        raise ConversionError("--scan applies to orbax output only: HF checkpoints are unscanned")
    ckpt = load(src, scan_layers=False if to == "hf" else scan, dtype=dtype)
    if to == "orbax":
        _make_contiguous(ckpt.params)
    save(
        dst,
        ckpt.config,
        ckpt.params,
        to,
        tokenizer_dir or ckpt.tokenizer_dir,
        max_shard_bytes=max_shard_bytes,
    )
    return ckpt
