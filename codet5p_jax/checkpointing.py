"""Orbax checkpoints of training runs: save / resume the full state, or load params only.

Layout of a run directory (`MODEL_DIR`)::

    MODEL_DIR/
      config.gin                  operative gin config of the (last) run
      metrics.jsonl, events.*     metrics (see train/metrics.py)
      checkpoints/
        <step>/                   one orbax CheckpointManager step, written atomically
          params/                 orbax PyTree (StandardSave) of the parameter tree: plain arrays
                                  with internal names (docs/DESIGN.md), e.g.
                                  encoder/layers_0/attention/query/kernel [D, N, H]
          opt_state/              optax state (absent in params-only exports)
          extra/                  objective state (momentum params, queues; absent when empty)
          meta/metadata           JSON: {"format", "step", "model_config": config fields + family,
                                  "data": {"batches_consumed", "seed", "num_data_shards", ...}}

`resolve_step_dir` accepts `MODEL_DIR`, `MODEL_DIR/checkpoints` or a `<step>` directory and
picks the latest finished step; `latest_params(path)` returns `(params, config, step)` as
numpy arrays, for conversion and inference. Saves are asynchronous; each step directory
appears only once complete (orbax writes to a temporary name and renames), so a run killed
mid-save leaves the previous checkpoint intact.

Resume is exact: the data pipeline is deterministic given its seed, so
`meta.data.batches_consumed` (one batch per step) is enough to skip to the next unseen batch.
"""

import json
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from codet5p_jax import families, storage
from codet5p_jax.convert.orbax_errors import error_summary, quiet_closed_event_loop

FORMAT = "codet5p_jax/1"
CHECKPOINTS = "checkpoints"
ITEMS = ("params", "opt_state", "extra", "meta")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, or does not fit the model being trained."""


# On object stores (no atomic rename) orbax writes a step in place and marks it finished with
# this file last; locally a finished step is one that was renamed from its temporary name.
COMMIT_MARKER = "commit_success.txt"


def _finished_steps(ckpt_dir: epath.Path) -> list[int]:
    """Step numbers of complete checkpoints (orbax temporaries have non-numeric names)."""
    if not ckpt_dir.is_dir():
        return []
    remote = storage.is_remote(ckpt_dir)
    return sorted(
        int(p.name)
        for p in ckpt_dir.iterdir()
        if p.name.isdigit() and p.is_dir() and (not remote or (p / COMMIT_MARKER).exists())
    )


def resolve_step_dir(path: str | epath.Path) -> epath.Path:
    """The `<step>` directory for `path` (a run dir, its `checkpoints/`, or a step dir).

    Raises:
      FileNotFoundError: when no finished checkpoint is found there.
    """
    path = epath.Path(path)
    if (path / "params").is_dir():
        return path
    for ckpt_dir in (path / CHECKPOINTS, path):
        steps = _finished_steps(ckpt_dir)
        if steps:
            return ckpt_dir / str(steps[-1])
    raise FileNotFoundError(
        f"No checkpoint under {path}: expected MODEL_DIR/{CHECKPOINTS}/<step>/params "
        "(or an HF directory with config.json)."
    )


def read_meta(step_dir: epath.Path) -> dict[str, Any]:
    """The JSON metadata of a step directory."""
    meta_file = step_dir / "meta" / "metadata"
    if not meta_file.is_file():
        raise CheckpointError(f"Checkpoint {step_dir} has no meta/metadata: truncated or foreign.")
    try:
        return json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"Checkpoint metadata {meta_file} is corrupt: {e}") from e


def _restore_tree(directory: epath.Path, target: Any) -> Any:
    """Restores one PyTree item into the structure/shardings of `target` (abstract arrays)."""
    if not directory.is_dir():
        raise CheckpointError(f"Checkpoint item {directory} is missing: truncated checkpoint.")
    quiet_closed_event_loop()
    try:
        restored = ocp.StandardCheckpointer().restore(directory, target)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise CheckpointError(
            f"Could not read {directory} (truncated or corrupt checkpoint): {error_summary(e)}"
        ) from e
    # Orbax may return plain tuples for optax NamedTuples: put leaves back into target's treedef.
    return jax.tree.unflatten(jax.tree.structure(target), jax.tree.leaves(restored))


def item_shapes(directory: epath.Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    """`{"a/b/c": (shape, dtype)}` of a saved PyTree item, from its metadata only."""
    quiet_closed_event_loop()
    try:
        # The handler, not a Checkpointer: a Checkpointer also looks for a step-level
        # _CHECKPOINT_METADATA, which item directories never have, and warns about it.
        meta = ocp.StandardCheckpointHandler().metadata(epath.Path(directory)).tree
    except Exception as e:
        raise CheckpointError(
            f"Could not read the metadata of {directory} (truncated or corrupt checkpoint): "
            f"{error_summary(e)}"
        ) from e
    flat = jax.tree_util.tree_flatten_with_path(meta)[0]
    return {
        "/".join(str(k.key) for k in path): (tuple(m.shape), np.dtype(m.dtype)) for path, m in flat
    }


class Checkpointer:
    """Saves and restores `TrainState`s of one run under `MODEL_DIR/checkpoints`.

    Args:
      model_dir: The run directory.
      save_every: Save when `step % save_every == 0` (plus forced saves at the end / SIGTERM).
      keep: Keep the newest `keep` checkpoints (None = all).
      async_save: Write in a background thread while training continues.
    """

    def __init__(
        self,
        model_dir: str | epath.Path,
        *,
        save_every: int,
        keep: int | None = 3,
        async_save=True,
    ):
        self.directory = epath.Path(model_dir) / CHECKPOINTS
        self.save_every = save_every
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_every,
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # leftovers of a run killed mid-save
            create=False,  # the first save creates it: a run that fails first leaves no empty dir
        )
        self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

    def latest_step(self) -> int | None:
        """Newest finished step, or None for a fresh run."""
        steps = _finished_steps(self.directory)
        return steps[-1] if steps else None

    def save(self, step: int, state, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Starts saving `state` at `step` (async); returns whether a save was started."""
        items = {
            "params": ocp.args.StandardSave(state.params),
            "opt_state": ocp.args.StandardSave(state.opt_state),
            "meta": ocp.args.JsonSave({"format": FORMAT, "step": int(step), **meta}),
        }
        if jax.tree.leaves(state.extra):
            items["extra"] = ocp.args.StandardSave(state.extra)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state, cfg):
        """Restores step `step` into the shardings of `abstract_state` (a `TrainState` of
        `jax.ShapeDtypeStruct`s with `.sharding`).

        Returns:
          `(state, meta)`.

        Raises:
          CheckpointError: for another architecture or a truncated/corrupt checkpoint.
        """
        step_dir = self.directory / str(step)
        meta = read_meta(step_dir)
        diffs = families.architecture_differences(meta.get("model_config", {}), cfg)
        if diffs:
            raise CheckpointError(
                f"Checkpoint {step_dir} is from a different architecture: {'; '.join(diffs)}."
            )
        _check_shapes(step_dir / "params", abstract_state.params, allow_missing=())
        params = _restore_tree(step_dir / "params", abstract_state.params)
        opt_state = _restore_tree(step_dir / "opt_state", abstract_state.opt_state)
        extra = abstract_state.extra
        if jax.tree.leaves(abstract_state.extra):
            extra = _restore_tree(step_dir / "extra", abstract_state.extra)
        state = abstract_state.replace(
            step=np.asarray(meta["step"], np.int32), params=params, opt_state=opt_state, extra=extra
        )
        return state, meta

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax resources."""
        self.manager.wait_until_finished()
        self.manager.close()


def _check_shapes(
    directory: epath.Path, abstract_params, allow_missing: tuple[str, ...]
) -> list[str]:
    """Compares a saved params item with the model's; returns the (allowed) missing paths.

    Raises:
      CheckpointError: on unexpected keys, shape mismatches, or missing non-allowed params.
    """
    if not directory.is_dir():
        raise CheckpointError(f"Checkpoint item {directory} is missing: truncated checkpoint.")
    saved = item_shapes(directory)
    flat = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    wanted = {"/".join(str(k.key) for k in path): tuple(x.shape) for path, x in flat}
    mismatched = [
        f"{k}: checkpoint {saved[k][0]}, model {v}"
        for k, v in wanted.items()
        if k in saved and saved[k][0] != v
    ]
    unexpected = sorted(set(saved) - set(wanted))
    missing = sorted(set(wanted) - set(saved))
    not_allowed = [k for k in missing if not any(k.startswith(p) for p in allow_missing)]
    problems = []
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:8]))
    if unexpected:
        problems.append(f"unexpected params: {', '.join(unexpected[:8])}")
    if not_allowed:
        problems.append(f"missing params: {', '.join(not_allowed[:8])}")
    if problems:
        raise CheckpointError(
            f"Checkpoint {directory} does not fit this model ({len(wanted)} params): "
            + " | ".join(problems)
        )
    return missing


def restore_params(
    path: str | epath.Path,
    abstract_params=None,
    *,
    allow_missing: tuple[str, ...] = (),
    cfg=None,
):
    """Loads only the parameters of an orbax checkpoint.

    Args:
      path: A run dir, its `checkpoints/` dir or a `<step>` dir (latest step is used).
      abstract_params: Target tree of `jax.ShapeDtypeStruct` (with `.sharding` to restore
        straight into shards). None = restore the saved tree as host numpy arrays.
      allow_missing: Param-path prefixes that may be absent from the checkpoint (newly added
        heads); the caller initialises them.
      cfg: When given, the saved model config must have the same architecture.

    Returns:
      `(params, missing)`: the restored tree (only the saved leaves when `allow_missing` hits)
      and the list of missing param paths.

    Raises:
      CheckpointError: for another architecture, unexpected/mismatched/missing params or a
        truncated checkpoint.
    """
    step_dir = resolve_step_dir(path)
    if cfg is not None:
        meta = read_meta(step_dir)
        diffs = families.architecture_differences(meta.get("model_config", {}), cfg)
        # A different `kind` is fine when only heads are added (t5 -> bimodal for stage 2).
        diffs = [d for d in diffs if not d.startswith(("kind:", "embed_dim:"))]
        if diffs:
            raise CheckpointError(
                f"Checkpoint {step_dir} is from a different architecture: {'; '.join(diffs)}."
            )
    directory = step_dir / "params"
    if abstract_params is None:
        shapes = item_shapes(directory)
        target = {}
        for key, (shape, dtype) in shapes.items():
            node = target
            *parents, leaf = key.split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = jax.ShapeDtypeStruct(shape, dtype, sharding=_host_sharding())
        params = _restore_tree(directory, target)
        return jax.tree.map(np.asarray, params), []
    missing = _check_shapes(directory, abstract_params, allow_missing)
    target = _drop_paths(abstract_params, set(missing))
    return _restore_tree(directory, target), missing


def _host_sharding():
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _drop_paths(tree: dict, paths: set[str], prefix: str = "") -> dict:
    """`tree` without the leaves whose "/"-joined path is in `paths` (and emptied dicts)."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            sub = _drop_paths(v, paths, path + "/")
            if sub:
                out[k] = sub
        elif path not in paths:
            out[k] = v
    return out


def latest_params(model_dir: str | epath.Path) -> tuple[dict, object, int]:
    """Params (numpy), model config and step of the newest checkpoint under `model_dir`.

    The entry point for `codet5p convert` and inference on a training run.
    """
    step_dir = resolve_step_dir(model_dir)
    meta = read_meta(step_dir)
    params, _ = restore_params(step_dir)
    config = families.config_from_dict(meta["model_config"], str(step_dir / "meta" / "metadata"))
    return params, config, int(meta["step"])


def save_params(directory: str | epath.Path, params, cfg, step: int = 0) -> epath.Path:
    """Writes a params-only checkpoint `directory/checkpoints/<step>` (e.g. converted HF weights).

    The result is loadable by `restore_params` / `latest_params` and as `INITIAL_CHECKPOINT_PATH`.
    """
    manager = ocp.CheckpointManager(
        epath.Path(directory) / CHECKPOINTS,
        item_names=("params", "meta"),
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True),
    )
    meta = {
        "format": FORMAT,
        "step": int(step),
        "model_config": families.config_to_dict(cfg),
        "data": {},
    }
    manager.save(
        step,
        args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    manager.wait_until_finished()
    manager.close()
    return epath.Path(directory) / CHECKPOINTS / str(step)
