"""Load any checkpoint for evaluation or inference: a training MODEL_DIR (or one of its steps),
a params-only orbax directory from `codet5p convert`, or an HF model directory."""

import pathlib

from codet5p_jax import checkpointing
from codet5p_jax.config import T5Config


def load_for_inference(path: str | pathlib.Path) -> tuple[T5Config, dict, str]:
    """`(config, numpy params, description)` of the checkpoint at `path`.

    Raises:
      FileNotFoundError: when `path` does not exist or holds no checkpoint.
      CheckpointError / ConversionError: for a truncated or inconsistent checkpoint.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint path {path} does not exist.")
    try:
        step_dir = checkpointing.resolve_step_dir(path)
    except FileNotFoundError:
        step_dir = None
    if step_dir is not None and (step_dir / "meta").is_dir():
        params, cfg, step = checkpointing.latest_params(step_dir)
        return cfg, params, f"{step_dir} (step {step})"
    from codet5p_jax.convert import formats

    ckpt = formats.load_checkpoint(path, scan_layers=None)
    return ckpt.config, ckpt.params, f"{ckpt.path} ({ckpt.format})"
