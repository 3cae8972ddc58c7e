"""`INITIAL_CHECKPOINT_PATH`: start a run from existing parameters (fine-tuning, stage 2).

Accepted sources, detected by layout:

* a training run (`MODEL_DIR`, its `checkpoints/` or a `<step>` dir; see checkpointing.py) -
  params are restored straight into their shards;
* a params-only orbax directory written by `codet5p convert --to orbax`;
* an HF model directory (`config.json` + weights), through `codet5p_jax.convert`.

Only params are loaded (never optimizer state or step). Parameters the new model has but the
source lacks are allowed only under `new_heads` prefixes (e.g. stage 2 adds `embedding_proj`,
`itm_head` and the learned temperature to a stage-1 encoder-decoder); they keep their fresh
initialisation and are listed in the log. Source parameters under `unused_params` prefixes
are dropped (an encoder-only classifier fine-tuned from an encoder-decoder drops `decoder/`).
Anything else missing, any other extra source parameter, and any shape difference is an error.
"""

import dataclasses
import logging

import flax.traverse_util as traverse_util
import jax
import numpy as np
from etils import epath

from codet5p_jax import checkpointing, families, loading

# Sub-trees a newer model may add on top of its source checkpoint.
NEW_HEADS = ("embedding_proj", "itm_head", "contrastive_temperature", "classification_head")
# Config fields a fine-tuned model may change against its source (its heads, what it pools, and
# for encoder-only heads the dropped decoder); the strict param accounting still checks shapes.
HEAD_FIELDS = ("kind", "embed_dim", "num_labels", "pooling", "pair_input", "num_decoder_layers")

log = logging.getLogger(__name__)


def _flat(tree) -> dict[str, object]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): v for path, v in flat}


def _load_host_params(path: epath.Path, cfg, unused_params: tuple[str, ...] = ()):
    """Host params of an HF or convert-orbax directory, or None for a training-run layout.

    Read through the one loader; the trainer's run layout is restored straight into shards by
    `checkpointing.restore_params` instead.
    """
    fmt, _ = loading.resolve(path)
    if fmt == "run":
        return None
    scan = getattr(cfg, "scan_layers", None)
    ckpt = loading.load(path, scan_layers=scan)
    src_cfg = ckpt.config
    if type(src_cfg) is not type(cfg):
        raise checkpointing.CheckpointError(
            f"INITIAL_CHECKPOINT_PATH {path} is a {families.family_of(src_cfg).name!r}-family "
            f"checkpoint; this run trains a {families.family_of(cfg).name!r}-family model."
        )
    # A stage-1 source may lack the heads stage 2 adds: compare with the source's kind/heads.
    heads = {k: getattr(src_cfg, k) for k in HEAD_FIELDS if hasattr(cfg, k)}
    if not unused_params and getattr(src_cfg, "kind", None) == getattr(cfg, "kind", None):
        # Same kind: a different decoder depth is an architecture difference, said as one. A
        # new head kind (e.g. an encoder-only classifier) leaves it to the param accounting.
        heads.pop("num_decoder_layers", None)
    diffs = families.architecture_differences(
        families.config_to_dict(src_cfg), dataclasses.replace(cfg, **heads)
    )
    if diffs:
        raise checkpointing.CheckpointError(
            f"INITIAL_CHECKPOINT_PATH {path} is from a different architecture: {'; '.join(diffs)}."
        )
    return _drop(ckpt.params, unused_params)


def _drop(params, prefixes: tuple[str, ...]):
    """`params` without the sub-trees whose `/`-joined path starts with one of `prefixes`."""
    if not prefixes:
        return params
    flat = _flat(params)
    kept = {k: v for k, v in flat.items() if not k.startswith(prefixes)}
    return traverse_util.unflatten_dict(kept, sep="/")


def load_initial_params(
    path: str | epath.Path,
    fresh_params,
    shardings,
    cfg,
    *,
    new_heads: tuple[str, ...] = NEW_HEADS,
    unused_params: tuple[str, ...] = (),
):
    """Replaces the leaves of `fresh_params` by those of the checkpoint at `path`.

    Args:
      path: See the module docstring.
      fresh_params: Freshly initialised, sharded params of the model being trained.
      shardings: Their `NamedSharding` tree.
      cfg: The model's config (architecture check).
      new_heads: Param-path prefixes that may be missing from the source.
      unused_params: Param-path prefixes of the source the model has no place for (dropped;
        HF and orbax sources only).

    Returns:
      `(params, initialised)`: the merged tree and the paths kept from `fresh_params`.

    Raises:
      CheckpointError / ConversionError: for another architecture, unexpected, misshapen or
        (non-head) missing params, or an unreadable checkpoint.
      FileNotFoundError: when `path` holds no checkpoint.
    """
    path = epath.Path(path)  # gs:// too
    if not path.exists():
        raise FileNotFoundError(f"INITIAL_CHECKPOINT_PATH {path} does not exist.")
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), fresh_params, shardings
    )
    host = _load_host_params(path, cfg, tuple(unused_params))
    if host is None:
        if unused_params:
            raise checkpointing.CheckpointError(
                f"INITIAL_CHECKPOINT_PATH {path} is a training run; dropping {unused_params} "
                "needs an HF or `codet5p convert --to orbax` directory."
            )
        loaded, missing = checkpointing.restore_params(
            path, abstract, allow_missing=new_heads, cfg=cfg
        )
        loaded_flat = _flat(loaded)
    else:
        loaded_flat, missing = _check_host(host, abstract, new_heads, path)
    fresh_flat = _flat(fresh_params)
    shard_flat = _flat(shardings)
    merged = {}
    for key, fresh in fresh_flat.items():
        if key in loaded_flat:
            value = loaded_flat[key]
            if not isinstance(value, jax.Array) or value.sharding != shard_flat[key]:
                value = jax.device_put(np.asarray(value, dtype=fresh.dtype), shard_flat[key])
            merged[key] = value
        else:
            merged[key] = fresh
    if missing:
        log.warning(
            "INITIAL_CHECKPOINT_PATH %s lacks %d new params, initialised fresh: %s",
            path,
            len(missing),
            ", ".join(missing),
        )
    leaves = [merged[k] for k in fresh_flat]
    return jax.tree.unflatten(jax.tree.structure(fresh_params), leaves), missing


def _check_host(host, abstract, new_heads, path):
    """Strict key/shape accounting of host params against the model."""
    src = _flat(host)
    want = _flat(abstract)
    bad_shape = [
        f"{k}: checkpoint {np.shape(src[k])}, model {v.shape}"
        for k, v in want.items()
        if k in src and tuple(np.shape(src[k])) != tuple(v.shape)
    ]
    unexpected = sorted(set(src) - set(want))
    missing = sorted(set(want) - set(src))
    not_allowed = [k for k in missing if not k.startswith(new_heads)]
    problems = []
    if bad_shape:
        problems.append("shape mismatch: " + "; ".join(bad_shape[:8]))
    if unexpected:
        problems.append("unexpected params: " + ", ".join(unexpected[:8]))
    if not_allowed:
        problems.append("missing params: " + ", ".join(not_allowed[:8]))
    if problems:
        raise checkpointing.CheckpointError(
            f"INITIAL_CHECKPOINT_PATH {path} does not fit this model: " + " | ".join(problems)
        )
    return src, missing
