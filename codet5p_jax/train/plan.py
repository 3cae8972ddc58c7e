"""`codet5p plan`: the memory and FLOPs of a training run, from its gin, without running it.

The planner receives the trainer's own `RunSetup` (mesh, rules, abstract state, the jitted step;
`trainer.train(planner=plan_step)`), builds an abstract batch from the feature converter's model
features, and compiles the step ahead of time: `jitted.lower(abstract_state, abstract_batch,
rng).compile()`. No parameter is ever materialised (every input is a `ShapeDtypeStruct` that
carries its sharding), so a 16B model plans on a laptop's CPU with fake devices.

Reported, per device:

* parameters / optimizer state / gradients: counted from the shardings (`train.memory`);
* XLA's own buffer assignment of the compiled step (`compiled.memory_analysis()`): arguments,
  outputs, aliased (donated) bytes and the temporary allocation (activations, gradients,
  collectives' buffers) - on the backend that compiled it (CPU for fake devices: its fusion and
  layout decisions differ from TPU/GPU, so treat the temp figure as an estimate);
* model FLOPs per step, counted on the jaxpr (`train.flops`), global and per device.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codet5p_jax import partitioning
from codet5p_jax.train import data, flops, memory


@dataclasses.dataclass(frozen=True)
class Plan:
    """The numbers `codet5p plan` prints (bytes are per device unless named `total`)."""

    model: str
    num_devices: int
    mesh: dict
    rules: str
    batch: dict
    state: dict
    xla: dict
    flops: int
    flops_per_device: float
    while_loops: int

    @property
    def peak_bytes(self) -> int:
        """Live bytes at the step's peak as XLA assigned them: arguments + outputs + temp,
        minus the outputs that reuse donated argument buffers."""
        x = self.xla
        return x["argument"] + x["output"] + x["temp"] - x["alias"]

    def lines(self, hbm_gib: float | None = None) -> list[str]:
        """Human-readable report."""
        s, x = self.state, self.xla

        def gib(n):  # exact bytes too: the numbers are compared with analytic counts
            return f"{memory.gib(n)} ({n:,} B)"

        out = [
            f"model {self.model}: {s['num_params']:,} parameters, {s['num_trainable']:,} trainable",
            f"mesh {self.mesh} ({self.num_devices} devices), axis rules {self.rules!r}, batch "
            + ", ".join(f"{k} {v}" for k, v in self.batch.items()),
            "per device:",
            f"  parameters      {gib(s['params'])}",
            f"    trainable     {gib(s['params_trainable'])}",
            f"    frozen        {gib(s['params_frozen'])}",
            f"  optimizer state {gib(s['opt_state'])}",
            f"  gradients       {gib(s['grads'])}",
            f"  XLA arguments   {gib(x['argument'])}",
            f"  XLA outputs     {gib(x['output'])}",
            f"    aliased to donated arguments {gib(x['alias'])}",
            f"  XLA temp        {gib(x['temp'])}",
            f"  peak (args + outputs + temp - aliased) {gib(self.peak_bytes)}",
            f"model FLOPs per step: {self.flops:.4g} ({self.flops_per_device:.4g} per device)",
        ]
        if self.while_loops:
            out.append(f"  ({self.while_loops} while loop(s) counted once: trip count unknown)")
        if hbm_gib is not None:
            verdict = "fits" if self.peak_bytes <= hbm_gib * memory.GIB else "does NOT fit"
            out.append(f"{verdict} in {hbm_gib:g} GiB of device memory")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes}


def abstract_batch(
    batch_size: int, task_feature_lengths: dict, mesh
) -> dict[str, jax.ShapeDtypeStruct]:
    """`ShapeDtypeStruct`s of one global batch, as the gin-bound feature converter makes it."""
    converter = data.make_feature_converter()
    lengths = converter.get_model_feature_lengths(task_feature_lengths)
    features = dict(converter.MODEL_FEATURES)
    if getattr(converter, "pack", False):
        features.update(getattr(converter, "PACKING_FEATURE_DTYPES", {}))
    sharding = partitioning.batch_sharding(mesh)
    out = {}
    for name, spec in features.items():
        rank = getattr(spec, "rank", 1)
        shape = (batch_size,) if rank == 0 else (batch_size, lengths[name])
        out[name] = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding)
    return out


def _memory_stats(compiled) -> dict[str, int]:
    stats = compiled.memory_analysis()
    stats = stats[0] if isinstance(stats, list | tuple) else stats
    return {
        "argument": int(stats.argument_size_in_bytes),
        "output": int(stats.output_size_in_bytes),
        "alias": int(stats.alias_size_in_bytes),
        "temp": int(stats.temp_size_in_bytes),
        "generated_code": int(stats.generated_code_size_in_bytes),
    }


def plan_step(
    setup, *, batch_size: int, task_feature_lengths: dict, num_microbatches: int, axis_rules: str
):
    """The planner `trainer.train(planner=...)` calls: compile ahead of time and count.

    Returns:
      A `Plan`.
    """
    mesh = setup.mesh
    batch = abstract_batch(batch_size, task_feature_lengths, mesh)
    rng = setup.rngs[2]
    with jax.set_mesh(mesh), nn.logical_axis_rules(setup.rules):
        compiled = setup.jitted.lower(setup.abstract, batch, rng).compile()
        total, loops = flops.count_flops(setup.jitted, setup.abstract, batch, rng)
    num_devices = math.prod(mesh.shape.values())
    cfg = setup.model.config
    return Plan(
        model=getattr(cfg, "name", type(cfg).__name__),
        num_devices=num_devices,
        mesh={k: int(v) for k, v in mesh.shape.items()},
        rules=axis_rules,
        batch={
            "size": batch_size,
            "microbatches": num_microbatches,
            **{k: v for k, v in task_feature_lengths.items()},
        },
        state=memory.state_bytes(setup.abstract, setup.partition),
        xla=_memory_stats(compiled),
        flops=int(total),
        flops_per_device=total / num_devices,
        while_loops=loops,
    )
