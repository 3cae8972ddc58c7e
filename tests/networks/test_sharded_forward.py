"""A forward pass sharded over 8 fake CPU devices equals the single-device one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from codet5p_jax import partitioning
from codet5p_jax.config import get_preset
from codet5p_jax.models import build_model, init_params


@pytest.mark.parametrize(
    "mesh_shape,rules,scan_layers",
    [
        ((2, 1, 4), "fsdp_tp", False),
        ((2, 2, 2), "fsdp_tp", True),
        ((4, 2, 1), "fsdp", False),
    ],
)
def test_sharded_logits_equal_single_device(mesh_shape, rules, scan_layers):
    assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
    # 32100 (the released 220m vocab) splits evenly over tensor=4.
    cfg = get_preset("tiny", vocab_size=32100, scan_layers=scan_layers)
    model = build_model(cfg)
    boxed = init_params(cfg, jax.random.key(0))
    params = nn.unbox(boxed)
    rng = np.random.RandomState(0)
    enc = rng.randint(5, cfg.vocab_size, (8, 24))
    enc[3, 10:] = 0
    dec = rng.randint(5, cfg.vocab_size, (8, 16))
    forward = lambda p, e, d: model.apply({"params": p}, e, d)  # noqa: E731
    expected = jax.jit(forward)(params, enc, dec)

    mesh = partitioning.make_mesh(*mesh_shape)
    axis_rules = partitioning.get_axis_rules(rules)
    shardings = partitioning.logical_to_shardings(boxed, mesh, axis_rules)
    batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    sharded_params = jax.device_put(params, shardings)
    # At least one weight really is split across devices.
    assert any(
        len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
        for x in jax.tree.leaves(sharded_params)
    )
    with mesh, nn.logical_axis_rules(axis_rules):
        got = jax.jit(forward, in_shardings=(shardings, batch, batch))(
            sharded_params, jnp.asarray(enc), jnp.asarray(dec)
        )
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5, rtol=1e-5)
