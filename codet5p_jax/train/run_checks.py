"""Checks of a run's settings before anything is written: required gin macros, counts and
feature lengths, and MODEL_DIR (local or `gs://`). Each failure is one `RunConfigError` line.
"""

import numbers
import os
from collections.abc import Mapping

from etils import epath

import gin
from codet5p_jax import storage


def check_required(**macros) -> None:
    """Raises naming every run-gin macro still set to `%gin.REQUIRED`."""
    missing = [name for name, value in macros.items() if value is gin.REQUIRED]
    if missing:
        raise ValueError(
            f"Required gin macro(s) not set: {', '.join(missing)} (bind them in the experiment "
            f"gin or with --gin.{missing[0]}=...)."
        )


class RunConfigError(ValueError):
    """A run setting or MODEL_DIR that cannot work; raised before any file is written."""


def check_run_parameters(task_feature_lengths, **named) -> None:
    """Raises `RunConfigError` unless every count is a positive int (None allowed for
    `train.keep_checkpoints`) and TASK_FEATURE_LENGTHS maps names to positive ints.

    Args:
      task_feature_lengths: The TASK_FEATURE_LENGTHS value.
      **named: `{"BATCH_SIZE": value, ...}`: the names used in the message.
    """

    def positive_int(x) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x > 0

    for name, value in named.items():
        if value is None and name == "train.keep_checkpoints":
            continue
        if not positive_int(value):
            raise RunConfigError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(task_feature_lengths, Mapping) or not task_feature_lengths:
        raise RunConfigError(
            "TASK_FEATURE_LENGTHS must be a dict such as {'inputs': 512, 'targets': 256}, got "
            f"{task_feature_lengths!r}"
        )
    for key, value in task_feature_lengths.items():
        if not isinstance(key, str) or not positive_int(value):
            raise RunConfigError(
                f"TASK_FEATURE_LENGTHS[{key!r}] must be a positive integer, got {value!r}"
            )


def check_feature_converter(model_config, converter, task_feature_lengths) -> None:
    """Raises `RunConfigError` if the batches would hide the model's padding from it.

    SeqIO's encoder-decoder converters pad with id 0 and emit no masks; a network whose padding
    id is not 0 (CodeGen's vocabulary: 50256, while 0 is "!") would take that padding for text
    and attend it. Such a model needs a converter that emits `encoder_input_mask`.

    Args:
      model_config: The run's model config (any family; `pad_token_id` is read).
      converter: The run's `seqio.FeatureConverter` (`data.make_feature_converter()`).
      task_feature_lengths: TASK_FEATURE_LENGTHS, to ask the converter for its features.
    """
    pad = getattr(model_config, "pad_token_id", 0)
    if pad == 0:
        return
    features = converter.get_model_feature_lengths(dict(task_feature_lengths))
    if "encoder_input_tokens" in features and "encoder_input_mask" not in features:
        raise RunConfigError(
            f"the model pads with id {pad} but {type(converter).__name__} pads with 0 and emits "
            "no encoder_input_mask, so the encoder would attend the padding; bind "
            "make_feature_converter.feature_converter_cls to a converter that emits it "
            "(@tasks.InstructFeatureConverter, gin/runs/instruct_tune.gin)"
        )


def check_model_dir(model_dir) -> epath.Path:
    """MODEL_DIR as a path, if it is (or can be created as) a writable directory.

    Nothing is created here; the run creates it once the whole configuration was accepted. A
    `gs://` MODEL_DIR is checked by asking its bucket (exists, answers, credentials work).
    """
    if not isinstance(model_dir, str | os.PathLike) or not str(model_dir):
        raise RunConfigError(f"MODEL_DIR must be a directory path, got {model_dir!r}")
    if storage.is_remote(model_dir):
        try:
            storage.check_reachable(model_dir, "MODEL_DIR")
        except storage.StorageError as e:
            raise RunConfigError(str(e)) from None
        path = epath.Path(model_dir)
        if path.is_file():
            raise RunConfigError(f"MODEL_DIR {path} exists and is not a directory")
        return path
    path = epath.Path(model_dir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise RunConfigError(f"MODEL_DIR {path} exists and is not a directory")
        raise RunConfigError(f"MODEL_DIR {path} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        reason = "read-only file system" if read_only else "permission denied"
        raise RunConfigError(f"MODEL_DIR {path} is not writable ({existing}: {reason})")
    return path
