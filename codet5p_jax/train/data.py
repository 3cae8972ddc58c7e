"""Host-local training batches from a SeqIO task or mixture, resumable by batch count.

The global batch at step `s` is defined by `(task, seed, num_data_shards, batch_size)` only:
it is the concatenation, in shard order, of batch `s` of each of the `num_data_shards` SeqIO
shards (each `batch_size / num_data_shards` rows). Process `p` of `P` reads shards
`[p * k, (p + 1) * k)` with `k = num_data_shards / P`, so

* multi-host data loading is sharded (no host reads another's examples), and
* a run with the same `num_data_shards` sees the same global batches on any number of hosts
  (the 2-process test compares against 1 process this way).

SeqIO pipelines are deterministic given the shuffle seed, so skipping the first
`start_batch` batches reproduces an uninterrupted run exactly (checkpoint resume).
"""

import difflib
import importlib
import re
from collections.abc import Iterator, Mapping

import jax
import numpy as np
import seqio
import tensorflow as tf

import gin


def import_task_modules(modules: tuple[str, ...]) -> None:
    """Imports the modules that register SeqIO tasks (e.g. `tasks`)."""
    for name in modules:
        importlib.import_module(name)


def get_task(name: str):
    """The registered SeqIO task or mixture `name`; a clear error lists close names."""
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        known = sorted(seqio.TaskRegistry.names()) + sorted(seqio.MixtureRegistry.names())
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown task or mixture {name!r} (MIXTURE_OR_TASK_NAME): not registered in seqio."
            f"{hint} {len(known)} names are registered."
        ) from None


def check_cached(name: str) -> None:
    """Raises ValueError unless every task of `name` has a complete seqio offline cache.

    Caches are written by seqio's `seqio_cache_tasks` (apache-beam) and found in the global
    cache dirs (`--seqio_additional_cache_dirs`). Checked before any compile, so a missing cache
    is reported by name instead of as an AssertionError from inside tf.data.
    """
    task = get_task(name)
    missing = [t.name for t in getattr(task, "tasks", [task]) if not t.cache_dir]
    if missing:
        dirs = seqio.utils.get_global_cache_dirs() or ["none given"]
        raise ValueError(
            f"USE_CACHED_TASKS is set but {', '.join(missing)} has no complete seqio cache "
            f"(a COMPLETED file) in the cache dirs {', '.join(dirs)}. Build one with "
            f"`seqio_cache_tasks --tasks={','.join(missing)} --module_import=tasks "
            "--output_cache_dir=DIR` and pass --seqio_additional_cache_dirs=DIR."
        )


@gin.configurable
def make_feature_converter(
    feature_converter_cls=seqio.EncDecFeatureConverter, pack: bool = False
) -> seqio.FeatureConverter:
    """The SeqIO feature converter of training batches (gin: bind the class, e.g. the stage-1
    converter that keeps `objective_ids`)."""
    return feature_converter_cls(pack=pack)


def _shard_dataset(
    name: str,
    feature_lengths: Mapping[str, int],
    *,
    split: str,
    shard: int,
    num_shards: int,
    rows: int,
    seed: int,
    shuffle: bool,
    use_cached: bool,
    repeat: bool,
):
    task = get_task(name)
    ds = task.get_dataset(
        sequence_length=dict(feature_lengths),
        split=split,
        use_cached=use_cached,
        shuffle=shuffle,
        seed=seed,
        shard_info=seqio.ShardInfo(index=shard, num_shards=num_shards),
        num_epochs=None if repeat else 1,
    )
    ds = make_feature_converter()(ds, dict(feature_lengths))
    return ds.batch(rows, drop_remainder=True)


def host_batches(
    name: str,
    feature_lengths: Mapping[str, int],
    *,
    batch_size: int,
    split: str = "train",
    seed: int = 0,
    shuffle: bool = True,
    num_data_shards: int | None = None,
    start_batch: int = 0,
    use_cached: bool = False,
    repeat: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's `[batch_size / process_count, ...]` rows of each global batch.

    Args:
      name: SeqIO task or mixture.
      feature_lengths: `TASK_FEATURE_LENGTHS`, e.g. `{"inputs": 512, "targets": 256}`.
      batch_size: Global batch size.
      split: Dataset split.
      seed: Shuffle seed (fixes the data order).
      shuffle: Shuffle examples.
      num_data_shards: SeqIO shards forming a global batch (default: process count); must be a
        multiple of the process count and divide `batch_size`.
      start_batch: Batches to skip (the checkpointed data position).
      use_cached: Read a seqio cache.
      repeat: Loop over the data forever (training); False = one epoch (eval).
    """
    procs, pid = jax.process_count(), jax.process_index()
    num_data_shards = num_data_shards or procs
    if num_data_shards % procs:
        raise ValueError(
            f"num_data_shards={num_data_shards} is not a multiple of {procs} processes."
        )
    if batch_size % num_data_shards:
        raise ValueError(
            f"BATCH_SIZE={batch_size} is not divisible by num_data_shards={num_data_shards}."
        )
    per_shard = batch_size // num_data_shards
    k = num_data_shards // procs
    shards = [
        _shard_dataset(
            name,
            feature_lengths,
            split=split,
            shard=s,
            num_shards=num_data_shards,
            rows=per_shard,
            seed=seed,
            shuffle=shuffle,
            use_cached=use_cached,
            repeat=repeat,
        ).skip(start_batch)
        for s in range(pid * k, (pid + 1) * k)
    ]
    iterators = zip(*(s.as_numpy_iterator() for s in shards), strict=False)
    while True:
        try:
            parts = next(iterators)
        except StopIteration:
            return
        except tf.errors.OpError as e:  # a corrupt record, a file gone: say which task
            raise DataReadError(
                f"reading task {name!r} ({split}) failed: {op_error_line(e)}"
            ) from None
        yield {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


class DataReadError(ValueError):
    """tf.data failed while reading a task's examples (one line, the task named)."""


def op_error_line(error) -> str:
    """A TensorFlow op error as one line: its type and message without the op boilerplate."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message or "").strip()
    text = re.sub(r"\s*\[Op:\w+\].*$", "", text.splitlines()[0] if text else "")
    return f"{type(error).__name__}: {text}"
