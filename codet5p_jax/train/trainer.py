"""The training loop: mesh, sharded state, the one jitted step, checkpoints, metrics.

Read top to bottom, `train()` is the whole procedure (big_vision style):

1. mesh + axis rules; batch size checked against the data-parallel size;
2. model + objective; abstract (shape-only) state and its shardings;
3. state: resumed from `MODEL_DIR/checkpoints`, else params from `INITIAL_CHECKPOINT_PATH`
   or a sharded fresh init, then optimizer / objective state initialised *from those params*;
4. the single `jax.jit` site: `train_step` with in/out shardings and the state donated;
5. the loop: host-local batches -> global arrays (on a thread, ahead) -> step; metrics every
   `log_every` steps (NaN check there, naming the step); async checkpoints every `save_every`
   steps and at the end; SIGTERM saves the current step and returns cleanly.
"""

import dataclasses
import functools
import logging
import signal
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

import gin
from codet5p_jax import atomic_files, checkpointing, families, partitioning
from codet5p_jax.config import get_preset
from codet5p_jax.objectives.seq2seq import Seq2SeqObjective
from codet5p_jax.train import data, goodput, initial_checkpoint, memory, optimizers, prefetch
from codet5p_jax.train import metrics as metrics_lib
from codet5p_jax.train import step as step_lib
from codet5p_jax.train.run_checks import (
    check_feature_converter,
    check_model_dir,
    check_required,
    check_run_parameters,
)
from codet5p_jax.train.state import TrainState

log = logging.getLogger(__name__)
# The gin-wrapped preset lookup: `MODEL_CONFIG = @get_preset()` in gin/models/*.gin.
configured_get_preset = gin.external_configurable(get_preset, module="codet5p_jax.config")


# ----------------------------------------------------------------------------------------------
# State construction
# ----------------------------------------------------------------------------------------------
def boxed_params_fn(model, cfg, objective):
    """`rng -> boxed params` of the network plus any objective-owned params (temperature)."""

    def init(rng):
        params = model.init(rng, *families.init_args(cfg))["params"]
        if hasattr(objective, "init_params"):
            params = objective.init_params(params, rng)
        return params

    return init


def abstract_state(boxed_init, objective, tx, partition, mesh, rules, rng):
    """Abstract `TrainState` (with `.sharding` on every leaf), shardings and the boxed params.

    The optimizer state is that of `tx` over the trainable subtree of `partition` only.
    """
    boxed = jax.eval_shape(boxed_init, rng)
    param_sh = partitioning.logical_to_shardings(boxed, mesh, rules)
    params = partitioning.unbox_abstract(boxed)
    trained = partition.split(params)[0]
    opt = jax.eval_shape(tx.init, trained)
    opt_sh = partitioning.shardings_like_params(opt, partition.split(param_sh)[0], trained, mesh)
    extra_boxed = jax.eval_shape(objective.init_extra_state, boxed, rng)
    extra_sh = partitioning.logical_to_shardings(extra_boxed, mesh, rules)
    extra = partitioning.unbox_abstract(extra_boxed)
    repl = partitioning.replicated(mesh)
    shardings = TrainState(step=repl, params=param_sh, opt_state=opt_sh, extra=extra_sh)
    plain = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt, extra=extra
    )
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), plain, shardings
    )
    return abstract, shardings, boxed


def _init_rest(params, boxed_template, objective, tx, partition, shardings, rng):
    """Optimizer and objective state from (possibly loaded) params, placed in their shards."""

    def rest(p, r):
        extra = objective.init_extra_state(partitioning.rebox(boxed_template, p), r)
        return tx.init(partition.split(p)[0]), partitioning.unbox_abstract(extra)

    opt_state, extra = jax.jit(rest, out_shardings=(shardings.opt_state, shardings.extra))(
        params, rng
    )
    return TrainState(
        step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
        params=params,
        opt_state=opt_state,
        extra=extra,
    )


@dataclasses.dataclass
class RunSetup:
    """Everything a run builds before touching data or files (shared with `codet5p plan`).

    Attributes:
      mesh / rules: The device mesh and the logical-axis rules (family rules appended).
      model / objective: The network and the objective bound to it.
      tx / partition: The optimizer over the trainable subtree and the trainable/frozen split.
      schedule: The learning-rate schedule.
      boxed_init: `rng -> boxed params` with frozen leaves already in their storage dtype.
      abstract / shardings / boxed: Abstract `TrainState`, its shardings, abstract boxed params.
      rngs: `(init, extra, step)` PRNG keys.
      jitted: The one jitted `train_step` (in/out shardings, state donated).
    """

    mesh: Any
    rules: tuple
    model: Any
    objective: Any
    tx: Any
    partition: Any
    schedule: Any
    boxed_init: Any
    abstract: Any
    shardings: Any
    boxed: Any
    rngs: tuple
    jitted: Any


def setup_run(
    cfg, *, objective_cls, mesh_fn, axis_rules, train_steps, batch_size, num_microbatches, seed
) -> RunSetup:
    """Mesh, model, objective, optimizer, trainable split, abstract state and the jitted step."""
    mesh = mesh_fn()
    family = families.family_of(cfg)
    rules = partitioning.get_axis_rules(axis_rules) + tuple(family.axis_rules.get(axis_rules, ()))
    partitioning.check_batch_size(batch_size, mesh)
    if batch_size % num_microbatches:
        raise ValueError(
            f"BATCH_SIZE={batch_size} is not divisible by {num_microbatches} microbatches."
        )
    model = families.build_model(cfg)
    objective = objective_cls(model)
    schedule = optimizers.make_schedule(total_steps=train_steps)
    rng = jax.random.key(seed)
    init_rng, extra_rng, step_rng = jax.random.split(rng, 3)
    plain_init = boxed_params_fn(model, cfg, objective)
    abstract_params = partitioning.unbox_abstract(jax.eval_shape(plain_init, init_rng))
    tx, partition = optimizers.make_optimizer(
        abstract_params, learning_rate=schedule, param_groups=family.param_groups, split=True
    )

    def boxed_init(r):
        # Frozen leaves are stored in their (half-precision) dtype from the start: a fresh
        # init never holds them in float32 outside this jitted function.
        return partition.cast_frozen(plain_init(r), is_leaf=partitioning.is_box)

    abstract, shardings, boxed = abstract_state(
        boxed_init, objective, tx, partition, mesh, rules, init_rng
    )
    step_fn = functools.partial(
        step_lib.train_step,
        loss_fn=objective.loss_fn,
        tx=tx,
        num_microbatches=num_microbatches,
        learning_rate_fn=schedule,
        partition=partition,
    )
    jitted = jax.jit(
        step_fn,
        in_shardings=(shardings, partitioning.batch_sharding(mesh), partitioning.replicated(mesh)),
        out_shardings=(shardings, partitioning.replicated(mesh)),
        donate_argnums=(0,),
    )
    return RunSetup(
        mesh=mesh,
        rules=rules,
        model=model,
        objective=objective,
        tx=tx,
        partition=partition,
        schedule=schedule,
        boxed_init=boxed_init,
        abstract=abstract,
        shardings=shardings,
        boxed=boxed,
        rngs=(init_rng, extra_rng, step_rng),
        jitted=jitted,
    )


class _Preemption:
    """SIGTERM sets a flag; the loop saves the current step and returns (TPU/GKE preemption)."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def agreed(self) -> bool:
        """All processes stop at the same step: any process's flag stops everyone."""
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.any(flags))

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
@gin.configurable(denylist=["stop_after", "planner"])
def train(
    *,
    model_dir: str = gin.REQUIRED,
    mixture_or_task_name: Any = gin.REQUIRED,
    task_feature_lengths: dict[str, int] = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    batch_size: int = gin.REQUIRED,
    model_config: Any = None,
    objective_cls: Any = Seq2SeqObjective,
    initial_checkpoint_path: str | None = None,
    new_heads: tuple[str, ...] = initial_checkpoint.NEW_HEADS,
    unused_initial_params: tuple[str, ...] = (),
    mesh_fn: Any = partitioning.make_mesh,
    axis_rules: str = "dp",
    seed: int = 0,
    data_seed: int | None = None,
    num_data_shards: int | None = None,
    use_cached_tasks: bool = False,
    task_modules: tuple[str, ...] = ("tasks",),
    num_microbatches: int = 1,
    save_every: int = 1000,
    keep_checkpoints: int | None = 3,
    async_checkpoints: bool = True,
    log_every: int = 50,
    peak_flops: float | None = None,
    plot: bool = True,
    profile_steps: tuple[int, int] | None = None,
    stop_after: int | None = None,
    planner: Any = None,
) -> dict[str, Any]:
    """Trains (or resumes training of) a model; t5x-style gin entry point.

    Args:
      model_dir: Run directory (checkpoints, metrics, config.gin). Resumes if it has checkpoints.
      mixture_or_task_name: SeqIO task or mixture (MIXTURE_OR_TASK_NAME), or a zero-argument
        callable that registers one and returns its name (called only when data is read).
      task_feature_lengths: e.g. `{"inputs": 512, "targets": 256}` (TASK_FEATURE_LENGTHS).
      train_steps: Total optimizer steps of the run (TRAIN_STEPS), counted from step 0.
      batch_size: Global batch size (BATCH_SIZE), divisible by the data-parallel size.
      model_config: The model config of any registered family (gin: `@get_preset()`); None =
        the T5 "tiny" preset.
      objective_cls: `cls(model)` -> an objective (docs/DESIGN.md, Objectives).
      initial_checkpoint_path: Params to start from (INITIAL_CHECKPOINT_PATH); ignored on resume.
      new_heads: Param prefixes allowed to be missing from `initial_checkpoint_path`.
      unused_initial_params: Param prefixes of `initial_checkpoint_path` the model drops (e.g.
        `("decoder/",)` for an encoder-only classifier from an encoder-decoder).
      mesh_fn: `() -> Mesh` (gin-configure `make_mesh`).
      axis_rules: Rule preset name in `partitioning.AXIS_RULES`.
      seed: Seed of parameter init and dropout.
      data_seed: Shuffle seed of the data (default `seed`).
      num_data_shards: SeqIO shards per global batch (default: process count).
      use_cached_tasks: Read the tasks' seqio offline caches (USE_CACHED_TASKS), written by
        `seqio_cache_tasks` into a dir given with `--seqio_additional_cache_dirs`.
      task_modules: Modules imported to register SeqIO tasks.
      num_microbatches: Gradient accumulation factor.
      save_every: Checkpoint interval in steps (a final checkpoint is always written).
      keep_checkpoints: Newest checkpoints to keep.
      async_checkpoints: Save in the background.
      log_every: Metrics interval in steps.
      peak_flops: Peak FLOP/s per device for MFU (default: datasheet table; CPU unknown).
      plot: Write `loss_curve.png` at the end.
      profile_steps: `(first, last)`: write a JAX profiler trace of steps first..last-1 into
        `MODEL_DIR/plugins/profile/` (TensorBoard's profile plugin), e.g. `(20, 25)`.
      stop_after: Stop (with a checkpoint) after this many steps of *this* process, as a
        preemption would (tests); not gin-bindable.
      planner: `codet5p plan`'s hook: `planner(setup: RunSetup, batch_size=,
        task_feature_lengths=, num_microbatches=, axis_rules=)` is returned instead of
        training; no data,
        checkpoint or MODEL_DIR is touched. Not gin-bindable.

    Returns:
      A summary: `{"step", "final_metrics", "history", "preempted", "losses", "timing"}`
      (`timing`: seconds per phase and the badput, see `train/goodput.py`).
    """
    timer = goodput.Timer()
    planning = planner is not None
    required = dict(TASK_FEATURE_LENGTHS=task_feature_lengths, TRAIN_STEPS=train_steps)
    required["BATCH_SIZE"] = batch_size
    if not planning:  # a plan reads no data, checkpoint or MODEL_DIR
        required.update(
            MODEL_DIR=model_dir,
            MIXTURE_OR_TASK_NAME=mixture_or_task_name,
            INITIAL_CHECKPOINT_PATH=initial_checkpoint_path,
        )
    check_required(**required)
    # Everything is checked before MODEL_DIR is written (step 3), so a refused run leaves no
    # config.gin or empty checkpoints/ behind.
    check_run_parameters(
        task_feature_lengths,
        TRAIN_STEPS=train_steps,
        BATCH_SIZE=batch_size,
        **{
            "train.num_microbatches": num_microbatches,
            "train.save_every": save_every,
            "train.log_every": log_every,
            "train.keep_checkpoints": keep_checkpoints,
        },
    )
    prefetcher = prefetch.make_prefetcher()  # its gin settings, checked before any write
    if not planning:  # a gs:// MODEL_DIR is checked before anything is compiled
        model_dir = check_model_dir(model_dir)
        profile = goodput.Profile(model_dir, profile_steps)
    cfg = model_config or get_preset("tiny")
    data_seed = seed if data_seed is None else data_seed

    # -- 1-2. mesh, model, objective, optimizer, trainable split, abstract state, jitted step --
    setup = setup_run(
        cfg,
        objective_cls=objective_cls,
        mesh_fn=mesh_fn,
        axis_rules=axis_rules,
        train_steps=train_steps,
        batch_size=batch_size,
        num_microbatches=num_microbatches,
        seed=seed,
    )
    if planning:
        return planner(
            setup,
            batch_size=batch_size,
            task_feature_lengths=dict(task_feature_lengths),
            num_microbatches=num_microbatches,
            axis_rules=axis_rules,
        )
    if callable(mixture_or_task_name):
        # A lazily registered task (`MIXTURE_OR_TASK_NAME = @tasks.instruct_task`): registered
        # only by a run that reads data, so `codet5p plan` needs no data path.
        mixture_or_task_name = mixture_or_task_name()
    data.import_task_modules(task_modules)
    data.get_task(mixture_or_task_name)  # fail fast on an unknown task, before any compile
    check_feature_converter(cfg, data.make_feature_converter(), task_feature_lengths)
    if use_cached_tasks:
        data.check_cached(mixture_or_task_name)
    mesh, rules, objective, tx = setup.mesh, setup.rules, setup.objective, setup.tx
    abstract, shardings, boxed, partition = (
        setup.abstract, setup.shardings, setup.boxed, setup.partition
    )  # fmt: skip
    init_rng, extra_rng, step_rng = setup.rngs
    report = memory.state_bytes(abstract, partition)
    line = memory.describe(report, abstract, partition)
    log.info("%s", line)
    if jax.process_index() == 0:
        print(f"codet5p train: {line}", flush=True)

    # -- 3. state --
    ckpt = checkpointing.Checkpointer(
        model_dir, save_every=save_every, keep=keep_checkpoints, async_save=async_checkpoints
    )
    data_meta = {
        "seed": data_seed,
        "num_data_shards": num_data_shards or jax.process_count(),
        "batch_size": batch_size,
        "task": mixture_or_task_name,
        "feature_lengths": dict(task_feature_lengths),
        "use_cached_tasks": use_cached_tasks,  # a cache holds the examples in another order
    }
    latest = ckpt.latest_step()
    if latest is not None:
        state, meta = ckpt.restore(latest, abstract, cfg)
        state = state.replace(step=jax.device_put(state.step, shardings.step))
        saved = {"use_cached_tasks": False, **meta.get("data", {})}  # older runs lack the key
        saved_data = {k: saved.get(k) for k in data_meta}
        if saved_data != data_meta:
            raise checkpointing.CheckpointError(
                f"Cannot resume {model_dir} exactly: its data settings {saved_data} differ from "
                f"this run's {data_meta}. Use a new MODEL_DIR or the original settings."
            )
        log.info(
            "resuming from step %d of %s (%s/%d)",
            latest,
            model_dir,
            checkpointing.CHECKPOINTS,
            latest,
        )
    else:
        params = partitioning.sharded_init(setup.boxed_init, mesh, rules, init_rng)[0]
        if initial_checkpoint_path:
            params, fresh = initial_checkpoint.load_initial_params(
                initial_checkpoint_path,
                params,
                shardings.params,
                cfg,
                new_heads=new_heads,
                unused_params=unused_initial_params,
            )
            log.info(
                "starting from INITIAL_CHECKPOINT_PATH %s (%d new params initialised fresh)",
                initial_checkpoint_path,
                len(fresh),
            )
        else:
            log.info("starting from scratch in %s (no checkpoint there)", model_dir)
        state = _init_rest(params, boxed, objective, tx, partition, shardings, extra_rng)
    start = int(jax.device_get(state.step))
    model_dir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        atomic_files.write_text(model_dir / "config.gin", gin.config_str())

    # -- 4. the one jit site (built by setup_run) --
    jitted = setup.jitted

    # -- 5. loop (batches reach the devices on a thread, ahead of the step: train/prefetch.py) --
    host_batches = data.host_batches(
        mixture_or_task_name,
        task_feature_lengths,
        batch_size=batch_size,
        seed=data_seed,
        num_data_shards=num_data_shards,
        start_batch=start,
        use_cached=use_cached_tasks,
    )
    preemption = _Preemption()
    logger = None
    pending: list[tuple[int, Any]] = []
    losses: list[float] = []
    preempted = False
    compiled = None
    step = start
    failed = True
    batches = prefetcher(host_batches, mesh, limit=train_steps - start)  # starts its thread
    try:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            while step < train_steps:
                with timer.measure("data"):
                    batch = next(batches)
                if compiled is None:
                    with timer.measure("compile"):
                        compiled = jitted.lower(state, batch, step_rng).compile()
                    logger = _make_logger(
                        model_dir, compiled, batch, train_steps, start, peak_flops
                    )
                profile.before_step(step + 1)
                with timer.measure("step"):
                    state, metrics = compiled(state, batch, step_rng)
                step += 1
                timer.count_step()
                pending.append((step, metrics))
                stop = preemption.agreed() or (
                    stop_after is not None and step - start >= stop_after
                )
                done = stop or step == train_steps
                if step % log_every == 0 or step % save_every == 0 or done:
                    with timer.measure("step"):  # the device time of the dispatched steps
                        jax.block_until_ready(pending[-1][1])
                    # raises on NaN, before any save
                    scalars = logger.log(step, pending, extra=timer.window())
                    losses += [float(jax.device_get(m["loss"])) for _, m in pending]
                    pending = []
                    del scalars
                if done or step % save_every == 0:
                    with timer.measure("checkpoint"):
                        ckpt.save(step, state, _meta(cfg, step, data_meta), force=done)
                if stop:
                    preempted = True
                    log.warning("Stopping at step %d (preemption/stop request); saved.", step)
                    break
        failed = False
    finally:
        batches.close()
        profile.stop()
        preemption.restore()
        with timer.measure("checkpoint"):  # waits for the last async save
            ckpt.close()
        if logger is not None:
            logger.close()
        if failed and jax.process_index() == 0 and ckpt.latest_step() is None:
            (model_dir / "config.gin").unlink(missing_ok=True)  # no checkpoint it belongs to
    history = logger.history if logger else []
    timing = timer.summary()
    log.info("%s", goodput.describe(timing))
    if jax.process_index() == 0:
        atomic_files.write_text(model_dir / "operative_config.gin", gin.operative_config_str())
        if plot and not preempted:
            metrics_lib.plot_loss_curve(model_dir)
    return {
        "step": step,
        "final_metrics": history[-1] if history else {},
        "history": history,
        "losses": losses,
        "preempted": preempted,
        "state": state,
        "timing": timing,
    }


def _meta(cfg, step: int, data_meta: dict) -> dict:
    """Checkpoint metadata: model config and the data position (one batch per step)."""
    return {
        "model_config": families.config_to_dict(cfg),
        "data": {**data_meta, "batches_consumed": int(step)},
    }


def _make_logger(model_dir, compiled, batch, train_steps, start, peak_flops):
    """Metrics logger with tokens/step from the batch and FLOPs/step from XLA's cost analysis."""
    tokens = int(sum(np.prod(v.shape) for k, v in batch.items() if k.endswith("_input_tokens")))
    flops = None
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        flops = float(cost.get("flops", 0.0)) or None
    except Exception:  # cost analysis is optional on some backends
        flops = None
    return metrics_lib.MetricsLogger(
        model_dir,
        total_steps=train_steps,
        tokens_per_step=tokens,
        flops_per_step=flops,
        peak_flops=peak_flops,
        start_step=start,
    )
