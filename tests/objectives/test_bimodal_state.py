"""Stage-2 extra state under 8 fake devices and across a checkpoint save / restore."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from testlib import make_bimodal_batch

from codet5p_jax import checkpointing, families, partitioning
from codet5p_jax.config import get_preset
from codet5p_jax.models import build_model, init_params
from codet5p_jax.objectives.bimodal import BimodalObjective
from codet5p_jax.train import optimizers
from codet5p_jax.train.state import TrainState

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def parts():
    cfg = get_preset("tiny-bimodal")
    model = build_model(cfg)
    obj = BimodalObjective(model, queue_size=16, alpha=0.4, sample_hard_negatives=True)
    boxed = obj.init_params(init_params(cfg, jax.random.PRNGKey(0)))
    extra_boxed = obj.init_extra_state(boxed, jax.random.PRNGKey(1))
    return obj, boxed, extra_boxed


def _assert_trees_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL), a, b)


def test_two_steps_on_8_devices_equal_single_device(parts):
    obj, boxed, extra_boxed = parts
    assert jax.device_count() == 8
    params, extra = nn.unbox(boxed), nn.unbox(extra_boxed)
    batches = [make_bimodal_batch(s, ids=np.arange(8) + 10 * s, bsz=8) for s in range(2)]

    def run(step_fn, p, e):
        outs = []
        for i, b in enumerate(batches):
            loss, (m, e) = step_fn(p, e, b, jax.random.PRNGKey(i))
            outs.append((loss, m))
        return outs, e

    single = jax.jit(lambda p, e, b, r: obj.loss_fn(p, e, b, r))
    ref_outs, ref_extra = run(single, params, extra)

    mesh = partitioning.make_mesh(data=2, fsdp=4)
    rules = partitioning.get_axis_rules("fsdp")
    p_sh = partitioning.logical_to_shardings(boxed, mesh, rules)
    e_sh = partitioning.logical_to_shardings(extra_boxed, mesh, rules)
    b_sh = partitioning.batch_sharding(mesh)
    repl = partitioning.replicated(mesh)
    # The momentum copy shards exactly like the params it mirrors; queues are replicated.
    for key in ("token_embedder", "encoder", "embedding_proj"):
        assert e_sh["momentum_params"][key] == p_sh[key]
    assert e_sh["text_queue"].spec == repl.spec

    def loss_fn(p, e, b, r):
        with nn.logical_axis_rules(rules):
            return obj.loss_fn(p, e, b, r)

    sharded = jax.jit(
        loss_fn,
        in_shardings=(p_sh, e_sh, b_sh, repl),
        out_shardings=(repl, (repl, e_sh)),
    )
    with mesh:
        params_d = jax.device_put(params, p_sh)
        extra_d = jax.device_put(extra, e_sh)
        outs, new_extra = run(sharded, params_d, extra_d)
    for (l1, m1), (l2, m2) in zip(ref_outs, outs, strict=True):
        np.testing.assert_allclose(float(l1), float(l2), **TOL)
        _assert_trees_close(m1, m2)
    _assert_trees_close(ref_extra, new_extra)
    emb = new_extra["momentum_params"]["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert isinstance(emb.sharding, NamedSharding) and len(emb.sharding.device_set) == 8


def test_state_equal_after_checkpoint_and_resume(parts, tmp_path):
    """The trainer's `checkpointing.Checkpointer` saves a `TrainState` with the objective's extra
    state and restores it into the 8-device layout (momentum params sharded like the params):
    every leaf comes back bit for bit, and the next step from it is bit-identical."""
    obj, boxed, extra_boxed = parts
    cfg = obj.model.config
    params, extra = nn.unbox(boxed), nn.unbox(extra_boxed)
    step = jax.jit(lambda p, e, b, r: obj.loss_fn(p, e, b, r))
    _, (_, extra) = step(
        params, extra, make_bimodal_batch(0, ids=np.arange(8), bsz=8), jax.random.PRNGKey(0)
    )
    tx = optimizers.make_optimizer(params, learning_rate=1e-3)
    state = TrainState(
        step=jnp.asarray(1, jnp.int32), params=params, opt_state=tx.init(params), extra=extra
    )

    ckpt = checkpointing.Checkpointer(tmp_path, save_every=1)
    meta = {"model_config": families.config_to_dict(cfg), "data": {"batches_consumed": 1}}
    assert ckpt.save(1, state, meta)
    ckpt.wait()
    assert ckpt.latest_step() == 1
    mesh = partitioning.make_mesh(data=2, fsdp=4)
    rules = partitioning.get_axis_rules("fsdp")
    p_sh = partitioning.logical_to_shardings(boxed, mesh, rules)
    repl = partitioning.replicated(mesh)
    shardings = TrainState(
        step=repl,
        params=p_sh,
        opt_state=partitioning.shardings_like_params(state.opt_state, p_sh, params, mesh),
        extra=partitioning.logical_to_shardings(extra_boxed, mesh, rules),
    )
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), state, shardings
    )
    restored, restored_meta = ckpt.restore(1, abstract, cfg)
    ckpt.close()
    assert int(restored.step) == 1 and restored_meta["data"] == {"batches_consumed": 1}
    wi = lambda extra: extra["momentum_params"]["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert wi(restored.extra).sharding == wi(shardings.extra)
    assert len(wi(restored.extra).sharding.device_set) == 8
    for name in ("params", "opt_state", "extra"):
        jax.tree.map(
            lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
            getattr(state, name),
            getattr(restored, name),
        )

    # One more step from the original and from the restored state (gathered to one device, so
    # both run the same single-device program): bit-identical.
    restored_extra = jax.device_get(restored.extra)
    b1 = make_bimodal_batch(1, ids=np.arange(8) + 8, bsz=8)
    l_a, (m_a, e_a) = step(params, extra, b1, jax.random.PRNGKey(1))
    l_b, (m_b, e_b) = step(params, restored_extra, b1, jax.random.PRNGKey(1))
    assert float(l_a) == float(l_b)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), e_a, e_b)
    assert int(e_b["queue_ptr"]) == 0 and int(e_b["queue_filled"]) == 16
